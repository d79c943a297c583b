//! MQTT topic rules as AWS IoT Core applies them: validity, filter matching, and the
//! per-certificate authorization policy the embedded broker enforces.
//!
//! Two points differ from plain MQTT 3.1.1 on purpose, following AWS IoT Core: a `#` filter
//! does not match its parent level (`a/#` does not match `a`), and a filter starting with a
//! wildcard never matches a topic starting with `$`.

use super::registry::CertificateRole;

/// Topics may have at most this many slashes in AWS IoT Core (the `$aws/...` reserved topics
/// are longer and exempt).
const MAX_USER_TOPIC_SLASHES: usize = 7;

/// Whether `topic` is a valid topic name to publish to.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 256
        && !topic.contains(['+', '#', '\0'])
        && (topic.starts_with("$aws/") || topic.matches('/').count() <= MAX_USER_TOPIC_SLASHES)
}

/// Whether `filter` is a valid subscription filter.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 256 || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

/// Whether a topic matches a filter.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        match (f, topic_levels.next()) {
            ("#", Some(_)) => return true,
            (_, None) => return false,
            ("+", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether every topic `filter` can match lies within `pattern` (a filter whose `+` stands for
/// one level and `#` for any remaining levels).
fn filter_within(filter: &str, pattern: &str) -> bool {
    let mut filter_levels = filter.split('/');
    for p in pattern.split('/') {
        match (p, filter_levels.next()) {
            ("#", Some(_)) => return true,
            (_, None) => return false,
            (_, Some("#")) => return false,
            ("+", Some(_)) => {}
            (p, Some(f)) if p == f => {}
            _ => return false,
        }
    }
    filter_levels.next().is_none()
}

/// The fleet provisioning request topics a claim certificate may publish to.
const CLAIM_PUBLISH: &[&str] = &[
    "$aws/certificates/create/json",
    "$aws/certificates/create-from-csr/json",
    "$aws/provisioning-templates/+/provision/json",
];

/// The fleet provisioning answer topics a claim certificate may subscribe to.
const CLAIM_SUBSCRIBE: &[&str] = &[
    "$aws/certificates/create/json/+",
    "$aws/certificates/create-from-csr/json/+",
    "$aws/provisioning-templates/+/provision/json/+",
];

/// The topic namespaces a thing owns.
fn thing_patterns(thing_name: &str) -> [String; 2] {
    [
        format!("$aws/things/{thing_name}/#"),
        format!("devicehub/{thing_name}/#"),
    ]
}

/// Whether a client holding a certificate with `role` may publish to `topic`.
pub fn may_publish(role: &CertificateRole, topic: &str) -> bool {
    match role {
        CertificateRole::Service => true,
        CertificateRole::Pending => false,
        CertificateRole::Claim => CLAIM_PUBLISH.iter().any(|p| matches(topic, p)),
        CertificateRole::Thing { thing_name } => {
            thing_patterns(thing_name).iter().any(|p| matches(topic, p))
        }
    }
}

/// Whether a client holding a certificate with `role` may subscribe to `filter`.
pub fn may_subscribe(role: &CertificateRole, filter: &str) -> bool {
    match role {
        CertificateRole::Service => true,
        CertificateRole::Pending => false,
        CertificateRole::Claim => CLAIM_SUBSCRIBE.iter().any(|p| filter_within(filter, p)),
        CertificateRole::Thing { thing_name } => thing_patterns(thing_name)
            .iter()
            .any(|p| filter_within(filter, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_aws_rules() {
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "a/#"));
        assert!(!matches("a", "a/#"), "# does not match the parent level");
        assert!(!matches("$aws/things/x", "#"));
        assert!(!matches("$aws/things/x", "+/things/x"));
        assert!(matches(
            "$aws/things/x/shadow/get",
            "$aws/things/+/shadow/#"
        ));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn validity() {
        assert!(valid_filter("a/+/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
        assert!(valid_topic("$aws/things/a/shadow/name/b/update/accepted"));
        assert!(!valid_topic("a/+"));
        assert!(!valid_topic("a/b/c/d/e/f/g/h/i"));
    }

    #[test]
    fn things_are_confined_to_their_own_topics() {
        let role = CertificateRole::Thing {
            thing_name: "desk-1".into(),
        };
        assert!(may_publish(&role, "$aws/things/desk-1/shadow/update"));
        assert!(may_publish(&role, "devicehub/desk-1/heartbeat"));
        assert!(!may_publish(&role, "$aws/things/desk-2/shadow/update"));
        assert!(!may_publish(&role, "$aws/certificates/create/json"));
        assert!(may_subscribe(&role, "$aws/things/desk-1/jobs/#"));
        assert!(!may_subscribe(&role, "$aws/things/+/jobs/#"));
        assert!(!may_subscribe(&role, "#"));
        assert!(!may_subscribe(&role, "devicehub/#"));
    }

    #[test]
    fn claims_only_reach_provisioning() {
        let role = CertificateRole::Claim;
        assert!(may_publish(&role, "$aws/certificates/create-from-csr/json"));
        assert!(may_publish(
            &role,
            "$aws/provisioning-templates/DeviceHubFleet/provision/json"
        ));
        assert!(!may_publish(&role, "$aws/things/desk-1/shadow/update"));
        assert!(may_subscribe(
            &role,
            "$aws/certificates/create/json/accepted"
        ));
        assert!(may_subscribe(
            &role,
            "$aws/provisioning-templates/DeviceHubFleet/provision/json/+"
        ));
        assert!(!may_subscribe(&role, "$aws/certificates/#"));
        assert!(!may_publish(&CertificateRole::Pending, "devicehub/x/y"));
    }
}
