//! Blast-radius limits: what a command may touch, however it was phrased.
//!
//! Anyone who can publish to the queues can drive the worker, so besides
//! authenticating commands, operators can bound their reach: the largest
//! number of instances one command may deregister (`all_matches`, leak-alert
//! quarantine: exceeding it refuses the whole set rather than doing part of
//! it), and optional allow-lists of instance-id and activation-id patterns
//! (`*` matches any run of characters; case-insensitive).

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most instances one command may deregister.
    pub max_instances: usize,
    /// Instance-id patterns allowed (empty: any).
    pub instance_patterns: Vec<String>,
    /// Activation-id patterns allowed (empty: any).
    pub activation_patterns: Vec<String>,
}

impl Default for Limits {
    /// No limits: what tests of the playbooks use unless they test limits.
    fn default() -> Self {
        Self {
            max_instances: usize::MAX,
            instance_patterns: Vec::new(),
            activation_patterns: Vec::new(),
        }
    }
}

impl Limits {
    /// May the worker act on this instance id?
    pub fn allows_instance(&self, id: &str) -> bool {
        allowed(&self.instance_patterns, id)
    }

    /// May the worker act on this activation id?
    pub fn allows_activation(&self, id: &str) -> bool {
        allowed(&self.activation_patterns, id)
    }
}

fn allowed(patterns: &[String], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob(p, value))
}

/// `*`-glob, ASCII case-insensitive, iterative (no backtracking blow-up).
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v) = (pattern.as_bytes(), value.as_bytes());
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(c) if c.eq_ignore_ascii_case(&v[vi]) => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("mi-hz01*", "mi-hz01web0001"));
        assert!(glob("MI-HZ01*", "mi-hz01web0001"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("mi-*-prod", "mi-x-prod"));
        assert!(!glob("mi-hz01*", "mi-bj01web"));
        assert!(!glob("exact", "exactly"));
        assert!(glob(&"*a".repeat(20), &"a".repeat(40)));
    }

    #[test]
    fn empty_lists_allow_everything() {
        let l = Limits::default();
        assert!(l.allows_instance("mi-anything"));
        let l = Limits {
            instance_patterns: vec!["mi-hz*".into()],
            activation_patterns: vec!["4ECEEE12-*".into()],
            ..Limits::default()
        };
        assert!(l.allows_instance("mi-hz01"));
        assert!(!l.allows_instance("mi-bj01"));
        assert!(l.allows_activation("4eceee12-56f1-4fbc-9ab1-890f12340001"));
        assert!(!l.allows_activation("00000000-0000-0000-0000-000000000000"));
    }
}
