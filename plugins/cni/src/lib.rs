//! CNI protocol library.
