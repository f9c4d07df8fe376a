//! Pool model and allocation store.
