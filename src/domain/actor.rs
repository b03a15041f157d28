//! Who did a manual action and why. Every operator action (CLI or console) carries an
//! [`Actor`]; the store writes its name and reason into the action's event as the
//! `"actor"` and `"reason"` keys of the event detail.

use serde::Serialize;

/// Longest accepted actor name and reason, in characters: an event detail is not a
/// document store.
pub const MAX_ACTOR_CHARS: usize = 100;
pub const MAX_REASON_CHARS: usize = 500;

/// A named person (or system) and the reason they gave. Built only through
/// [`Actor::new`], so neither is ever empty, over-long or multi-line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    name: String,
    reason: String,
}

/// Why an actor or reason was refused; the message names the flag it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    #[error("--actor must name who acts (1 to {MAX_ACTOR_CHARS} characters, one line)")]
    BadName,
    #[error(
        "--reason must say why (1 to {MAX_REASON_CHARS} characters, one line), e.g. \
         \"customer called, salary late\""
    )]
    BadReason,
    #[error(
        "--actor is needed: no login name could be found (SUDO_USER, USER and LOGNAME are \
         unset or root)"
    )]
    NoLoginName,
}

impl Actor {
    /// Trims both; refuses empty, over-long or multi-line values.
    pub fn new(name: &str, reason: &str) -> Result<Self, ActorError> {
        let name = name.trim();
        let reason = reason.trim();
        let bad = |s: &str, max: usize| {
            s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control)
        };
        if bad(name, MAX_ACTOR_CHARS) {
            return Err(ActorError::BadName);
        }
        if bad(reason, MAX_REASON_CHARS) {
            return Err(ActorError::BadReason);
        }
        Ok(Self {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    }

    /// The actor from `--actor`, or else the login name of the person at the shell:
    /// `SUDO_USER` first (operators run `sudo -u repayd repayd ...`, and the service
    /// user's name says nothing), then `USER`, then `LOGNAME`; `root` does not count as a
    /// person. `lookup` reads an environment variable (injected for tests).
    pub fn resolve(
        flag: Option<&str>,
        reason: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ActorError> {
        match flag {
            Some(name) => Self::new(name, reason),
            None => {
                // A missing reason is the first thing to say, whoever acts.
                Self::new("-", reason)?;
                let login = ["SUDO_USER", "USER", "LOGNAME"]
                    .iter()
                    .filter_map(|k| lookup(k))
                    .map(|v| v.trim().to_string())
                    .find(|v| !v.is_empty() && v != "root")
                    .ok_or(ActorError::NoLoginName)?;
                Self::new(&login, reason)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// `detail` with `"actor"` and `"reason"` added (an object; anything else is wrapped).
    pub fn stamp(&self, detail: serde_json::Value) -> serde_json::Value {
        let mut map = match detail {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        map.insert("actor".into(), self.name.clone().into());
        map.insert("reason".into(), self.reason.clone().into());
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_long_and_multiline() {
        assert_eq!(Actor::new(" ", "r"), Err(ActorError::BadName));
        assert_eq!(Actor::new("a", ""), Err(ActorError::BadReason));
        assert_eq!(Actor::new("a\nb", "r"), Err(ActorError::BadName));
        assert_eq!(
            Actor::new("a", &"x".repeat(MAX_REASON_CHARS + 1)),
            Err(ActorError::BadReason)
        );
        let a = Actor::new(" alice ", " called ").unwrap();
        assert_eq!((a.name(), a.reason()), ("alice", "called"));
    }

    #[test]
    fn login_name_prefers_sudo_user_and_skips_root() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let a = Actor::resolve(None, "r", env(&[("SUDO_USER", "bob"), ("USER", "repayd")]));
        assert_eq!(a.unwrap().name(), "bob");
        let a = Actor::resolve(None, "r", env(&[("SUDO_USER", "root"), ("USER", "carol")]));
        assert_eq!(a.unwrap().name(), "carol");
        assert_eq!(
            Actor::resolve(None, "r", env(&[("USER", "root")])),
            Err(ActorError::NoLoginName)
        );
        assert_eq!(
            Actor::resolve(Some(""), "r", env(&[("USER", "dave")])),
            Err(ActorError::BadName)
        );
    }

    #[test]
    fn stamp_adds_actor_and_reason() {
        let a = Actor::new("alice", "why").unwrap();
        let v = a.stamp(serde_json::json!({"k": 1}));
        assert_eq!(
            v,
            serde_json::json!({"k": 1, "actor": "alice", "reason": "why"})
        );
    }
}
