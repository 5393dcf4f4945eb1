//! Model name patterns: an exact name, or `prefix*`.

pub fn matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

pub fn is_wildcard(pattern: &str) -> bool {
    pattern.ends_with('*')
}

/// True when `model` matches any pattern, or the list is empty (no restriction).
pub fn allowed(patterns: &[String], model: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        assert!(matches("gpt-4o", "gpt-4o"));
        assert!(!matches("gpt-4o", "gpt-4o-mini"));
        assert!(matches("gpt-4*", "gpt-4o-mini"));
        assert!(matches("*", "anything"));
        assert!(!matches("claude-*", "gpt-4"));
        assert!(allowed(&[], "x"));
        assert!(!allowed(&["a".into()], "x"));
    }
}
