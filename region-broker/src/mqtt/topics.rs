//! MQTT topic names and filters, and where they live in Meridian: pure functions.
//!
//! A PUBLISH's topic name is stored whole as the record's key in one Meridian topic, so a
//! Kafka or native consumer of that topic reads the device's topic name as the key and
//! one MQTT topic's messages stay in one partition, in order (the key decides the
//! partition, as for every producer). Which Meridian topic: the first mapping
//! (`[[mqtt.mapping]]`) whose prefix starts the name, else the name's first level
//! (`sensors/room1/temp` → `sensors`). The way back: a record of Meridian topic `T` whose
//! key is an MQTT topic name that maps to `T` is delivered under that name; any other
//! record (a Kafka producer's, keyless or keyed otherwise) under `T`'s own name
//! (for a mapped topic, its prefix without the trailing `/`).

use meridian_proto::names;

pub use crate::config::MqttMapping as Mapping;

/// Why a topic name or filter is refused (MQTT 5's reason: Topic Name invalid / Topic
/// Filter invalid, with this text as its reason string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty, too long, or holding NUL.
    #[error("the topic {0:?} is empty, longer than 65535 bytes or holds NUL")]
    Malformed(String),
    /// A wildcard in a PUBLISH's topic name.
    #[error("the topic name {0:?} holds a wildcard ('+' or '#'); only filters may")]
    Wildcard(String),
    /// A wildcard in the wrong place of a filter.
    #[error(
        "the filter {0:?} is malformed: '#' must be the last level and '+' or '#' a whole level"
    )]
    BadFilter(String),
    /// A shared subscription without a share name or filter.
    #[error(
        "the shared subscription {0:?} must be $share/NAME/FILTER, NAME without '+', '#' or '/'"
    )]
    BadShare(String),
    /// `$`-topics are the server's.
    #[error("the topic {0:?} starts with '$', which is reserved for the server")]
    Reserved(String),
    /// The name maps to no valid Meridian topic.
    #[error(
        "the topic {name:?} maps to no Meridian topic: {why}; add an [[mqtt.mapping]] for its prefix"
    )]
    Unmapped {
        /// The MQTT topic name.
        name: String,
        /// Why its first level is no topic name.
        why: String,
    },
}

fn well_formed(s: &str) -> bool {
    !s.is_empty() && s.len() <= usize::from(u16::MAX) && !s.contains('\0')
}

/// Checks a PUBLISH's topic name: no wildcards, not a `$`-topic.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if !well_formed(name) {
        return Err(TopicError::Malformed(name.to_owned()));
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::Wildcard(name.to_owned()));
    }
    if name.starts_with('$') {
        return Err(TopicError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// A SUBSCRIBE's filter, parsed: its share group (`$share/NAME/…`) and the filter proper.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// The share name of a shared subscription.
    pub share: Option<String>,
    /// The filter matched against topic names.
    pub filter: String,
}

/// Parses and checks a filter (`+` and `#` whole levels, `#` last; `$share/NAME/FILTER`).
pub fn parse_filter(raw: &str) -> Result<Filter, TopicError> {
    if !well_formed(raw) {
        return Err(TopicError::Malformed(raw.to_owned()));
    }
    let (share, filter) = match raw.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((name, filter))
                if !name.is_empty() && !name.contains(['+', '#']) && !filter.is_empty() =>
            {
                (Some(name.to_owned()), filter)
            }
            _ => return Err(TopicError::BadShare(raw.to_owned())),
        },
        None => (None, raw),
    };
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad = match *level {
            "#" => i + 1 != levels.len(),
            "+" => false,
            l => l.contains(['+', '#']),
        };
        if bad {
            return Err(TopicError::BadFilter(raw.to_owned()));
        }
    }
    Ok(Filter {
        share,
        filter: filter.to_owned(),
    })
}

/// Whether `filter` (checked by [`parse_filter`]) matches `name`. A filter starting with a
/// wildcard matches no `$`-topic (MQTT 4.7.2).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = name.split('/');
    for f in filter.split('/') {
        match (f, names.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(n)) if f == n => {}
            _ => return false,
        }
    }
    names.next().is_none()
}

/// Where MQTT topic names live: the configured mappings, then the first level.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    mappings: Vec<Mapping>,
}

impl Topics {
    /// With these mappings (each checked by [`Mapping::validate`]); the longest prefix
    /// wins where two overlap.
    pub fn new(mut mappings: Vec<Mapping>) -> Topics {
        mappings.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Topics { mappings }
    }

    /// The Meridian topic holding MQTT topic `name` (checked by [`validate_name`]).
    pub fn topic_of<'a>(&'a self, name: &'a str) -> Result<&'a str, TopicError> {
        if let Some(m) = self.mappings.iter().find(|m| name.starts_with(&m.prefix)) {
            return Ok(&m.topic);
        }
        let first = name.split('/').next().unwrap_or(name);
        names::validate("topic", first).map_err(|e| TopicError::Unmapped {
            name: name.to_owned(),
            why: e.to_string(),
        })?;
        Ok(first)
    }

    /// The MQTT topic name a record of Meridian topic `topic` with `key` is delivered
    /// under: the key when it is a topic name that maps there, else the topic's own name.
    pub fn name_of(&self, topic: &str, key: Option<&[u8]>) -> String {
        if let Some(name) = key.and_then(|k| std::str::from_utf8(k).ok())
            && validate_name(name).is_ok()
            && self.topic_of(name).is_ok_and(|t| t == topic)
        {
            return name.to_owned();
        }
        match self.mappings.iter().find(|m| m.topic == topic) {
            Some(m) => m.prefix.trim_end_matches('/').to_owned(),
            None => topic.to_owned(),
        }
    }

    /// Of `existing` Meridian topics, those holding names `filter` can match.
    pub fn topics_for<'a>(&self, filter: &str, existing: &'a [String]) -> Vec<&'a str> {
        if filter.starts_with('$') {
            return Vec::new();
        }
        existing
            .iter()
            .filter(|t| self.may_hold(filter, t))
            .map(String::as_str)
            .collect()
    }

    /// Whether Meridian topic `topic` may hold a name `filter` matches: under a mapping's
    /// prefix, or by its first level. (Too many is harmless: each record's name is matched
    /// again before delivery.)
    fn may_hold(&self, filter: &str, topic: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        if self
            .mappings
            .iter()
            .any(|m| m.topic == topic && prefix_may_match(&levels, m.levels()))
        {
            return true;
        }
        match levels[0] {
            "#" | "+" => true,
            l => l == topic,
        }
    }
}

/// Whether a filter of `levels` can match a name under `prefix` (or the prefix's own
/// name).
fn prefix_may_match<'a>(levels: &[&str], prefix: impl Iterator<Item = &'a str>) -> bool {
    for (i, p) in prefix.enumerate() {
        match levels.get(i) {
            Some(&"#") => return true,
            Some(&"+") => {}
            Some(l) if *l == p => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        for (f, n, m) in [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/b", true),
            ("+", "/b", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/c", false),
            ("a//b", "a//b", true),
            ("a/+/c", "a//c", true),
        ] {
            assert_eq!(matches(f, n), m, "{f} vs {n}");
        }
    }

    #[test]
    fn bad_filters_and_names_are_refused() {
        for f in [
            "a/#/b",
            "a+",
            "a/b#",
            "",
            "$share/g",
            "$share//a",
            "$share/g+/a",
        ] {
            assert!(parse_filter(f).is_err(), "{f}");
        }
        let s = parse_filter("$share/g1/a/+").unwrap();
        assert_eq!((s.share.as_deref(), s.filter.as_str()), (Some("g1"), "a/+"));
        for n in ["a/+", "#", "", "$SYS/x", "a\0b"] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
        assert!(validate_name("a//b/ c").is_ok());
    }

    #[test]
    fn names_map_to_topics_and_back() {
        let t = Topics::new(vec![Mapping {
            prefix: "factory/line1/".into(),
            topic: "line1".into(),
        }]);
        assert_eq!(t.topic_of("sensors/room1/t").unwrap(), "sensors");
        assert_eq!(t.topic_of("sensors").unwrap(), "sensors");
        assert_eq!(t.topic_of("factory/line1/m3").unwrap(), "line1");
        assert_eq!(t.topic_of("factory/line2").unwrap(), "factory");
        assert!(matches!(
            t.topic_of("/leading"),
            Err(TopicError::Unmapped { .. })
        ));
        assert!(t.topic_of("a b/c").is_err());
        assert_eq!(
            t.name_of("sensors", Some(b"sensors/room1/t")),
            "sensors/room1/t"
        );
        assert_eq!(t.name_of("sensors", Some(b"other/x")), "sensors");
        assert_eq!(t.name_of("sensors", None), "sensors");
        assert_eq!(
            t.name_of("line1", Some(b"factory/line1/m3")),
            "factory/line1/m3"
        );
        assert_eq!(t.name_of("line1", Some(b"k")), "factory/line1");
        let all = vec![
            "sensors".to_owned(),
            "line1".to_owned(),
            "factory".to_owned(),
        ];
        assert_eq!(t.topics_for("sensors/#", &all), ["sensors"]);
        assert_eq!(t.topics_for("#", &all), ["sensors", "line1", "factory"]);
        assert_eq!(t.topics_for("factory/+/m3", &all), ["line1", "factory"]);
        assert_eq!(t.topics_for("factory/line2/#", &all), ["factory"]);
        assert!(t.topics_for("$SYS/#", &all).is_empty());
    }

    #[test]
    fn mappings_are_checked() {
        let m = |p: &str, t: &str| Mapping {
            prefix: p.into(),
            topic: t.into(),
        };
        assert!(m("a/", "a").validate().is_ok());
        assert!(m("a", "a").validate().is_err());
        assert!(m("a/+/", "a").validate().is_err());
        assert!(m("$x/", "a").validate().is_err());
        assert!(m("a/", "a b").validate().is_err());
    }
}
