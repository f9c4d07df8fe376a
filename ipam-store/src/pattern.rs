//! Pool names with wildcards, as spiderpool allows them in pool lists (`gpu1-*`): `*` (any
//! run of characters), `?` (one character) and `[...]` (one of a set: `[0-9]`, `[ab]`,
//! `[!0-9]` for none of them). A list expands pattern by pattern, in the list's order; the
//! names one pattern matches come in name order, and a name already listed is not repeated.

/// Whether `entry` is a pattern rather than one pool's name.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

/// Checks a pattern's brackets; the message says what to fix.
pub fn validate(pattern: &str) -> Result<(), String> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'[' {
            match class_end(bytes, i) {
                Some(end) => i = end,
                None => {
                    return Err(format!(
                        "{pattern:?}: the [ at position {} has no closing ]: write [0-9] for one \
                         of a set of characters",
                        i + 1
                    ))
                }
            }
        }
        i += 1;
    }
    Ok(())
}

/// Whether `name` matches `pattern` (a plain name matches only itself).
pub fn matches(pattern: &str, name: &str) -> bool {
    matches_bytes(pattern.as_bytes(), name.as_bytes())
}

/// `names` matching the entries of `list` in order: see the module's rule.
pub fn expand<'a>(list: &[String], names: &[&'a str]) -> Vec<&'a str> {
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<&'a str> = Vec::new();
    for entry in list {
        for &name in &sorted {
            if matches(entry, name) && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Backtracking over the last `*` only: linear in practice, and pool names are short.
fn matches_bytes(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
                continue;
            }
            Some(b'[') => {
                if let Some(end) = class_end(pattern, p) {
                    if class_matches(&pattern[p + 1..end], name[n]) {
                        p = end + 1;
                        n += 1;
                        continue;
                    }
                } else if name[n] == b'[' {
                    p += 1;
                    n += 1;
                    continue;
                }
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The index of the `]` closing the class opened at `open`; a `]` right after `[` or `[!` is
/// a member, as in shell globs.
fn class_end(pattern: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(pattern.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    if pattern.get(i) == Some(&b']') {
        i += 1;
    }
    (i..pattern.len()).find(|&j| pattern[j] == b']')
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (negated, members) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut found = false;
    let mut i = 0;
    while i < members.len() {
        if i + 2 < members.len() && members[i + 1] == b'-' {
            found |= (members[i]..=members[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= members[i] == c;
            i += 1;
        }
    }
    found != negated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_in_a_shell() {
        let cases = [
            ("gpu1-*", "gpu1-node2", true),
            ("gpu1-*", "gpu10-node2", false),
            ("gpu1-*", "gpu1-", true),
            ("gpu?-node1", "gpu8-node1", true),
            ("gpu?-node1", "gpu10-node1", false),
            ("gpu[1-4]-*", "gpu3-node9", true),
            ("gpu[1-4]-*", "gpu5-node9", false),
            ("gpu[!1-4]-*", "gpu5-node9", true),
            ("gpu[^1-4]-*", "gpu2-node9", false),
            ("*-node1", "gpu8-node1", true),
            ("*-node1", "gpu8-node10", false),
            ("*node*1*", "gpu8-node21x", true),
            ("a*b*c", "abxbxc", true),
            ("a*b*c", "abxbx", false),
            ("plain", "plain", true),
            ("plain", "plainer", false),
            ("*", "anything", true),
            ("[]x]y", "]y", true),
            ("[]x]y", "xy", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn expansion_keeps_list_order_sorts_each_pattern_and_drops_repeats() {
        let names = ["gpu1-node2", "gpu2-node1", "gpu1-node1", "other"];
        let list: Vec<String> = ["gpu1-node2", "gpu1-*", "gpu2-*", "missing-*"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            expand(&list, &names),
            ["gpu1-node2", "gpu1-node1", "gpu2-node1"]
        );
    }

    #[test]
    fn unclosed_brackets_are_refused() {
        assert!(validate("gpu[1-*").unwrap_err().contains("no closing ]"));
        assert!(validate("gpu[1-4]-*").is_ok());
        assert!(is_pattern("gpu1-*") && is_pattern("gpu?") && !is_pattern("gpu1-net11"));
    }
}
