//! The local RPC's message formats, shared by the server and the command line's client: a
//! request is one JSON frame `{"token","id","method","params"}`, a reply one JSON frame
//! `{"id","result"}` or `{"id","error":{"kind","message"}}`. See docs/protocol.md, "Local RPC
//! (ZeroMQ)".

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest request DeviceHub reads; requests carry file paths, never file contents, so a
/// bigger one is a mistake or an attack.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Method names.
pub mod method {
    pub const STATUS: &str = "status";
    pub const DEVICES: &str = "devices";
    pub const PLUGINS: &str = "plugins";
    pub const PRINT: &str = "print";
    pub const SCALE_READ: &str = "scale.read";
    pub const REGISTER: &str = "register";
    pub const CONFIG_RELOAD: &str = "config.reload";
    pub const PLUGINS_RESCAN: &str = "plugins.rescan";
}

/// Topics of the publish socket (the first frame of each message).
pub mod topic {
    pub const DEVICE: &str = "device";
    pub const JOB: &str = "job";
    pub const HEALTH: &str = "health";
    pub const SCALE: &str = "scale";
    pub const REGISTRATION: &str = "registration";
}

/// One request as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub token: String,
    /// Chosen by the client and echoed in the reply; any JSON value.
    pub id: Value,
    pub method: String,
    /// Method parameters; an object, or absent for methods without any.
    #[serde(default)]
    pub params: Value,
}

/// Why a request failed, as the reply's `error` member carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, camelCase name for the failure, for scripts to match on.
    pub kind: String,
    /// A sentence for people.
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// One reply as it travels: exactly one of `result` and `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn ok(id: Value, result: Value) -> Reply {
        Reply {
            id,
            result: Some(result),
            error: None,
        }
    }

    pub fn failed(id: Value, error: ErrorBody) -> Reply {
        Reply {
            id,
            result: None,
            error: Some(error),
        }
    }

    /// The reply as one frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply is plain JSON and always serializes")
    }
}

/// Parses one request frame. The error names what is wrong and carries the request's `id` when
/// one could be read, so that even a refused request is answered under its own id.
pub fn parse_request(frame: &[u8]) -> Result<Request, Reply> {
    if frame.len() > MAX_REQUEST_BYTES {
        return Err(Reply::failed(
            Value::Null,
            ErrorBody::new(
                "tooLarge",
                format!(
                    "the request is {} bytes; at most {MAX_REQUEST_BYTES} are accepted (send \
                     file paths, not file contents)",
                    frame.len()
                ),
            ),
        ));
    }
    let value: Value = serde_json::from_slice(frame).map_err(|e| {
        Reply::failed(
            Value::Null,
            ErrorBody::new("malformed", format!("the request is not JSON: {e}")),
        )
    })?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    serde_json::from_value::<Request>(value).map_err(|e| {
        Reply::failed(
            id,
            ErrorBody::new(
                "malformed",
                format!(
                    "the request must be an object with \"token\", \"id\", \"method\" and \
                     optionally \"params\": {e}"
                ),
            ),
        )
    })
}

/// Compares a presented token with the expected one in time that does not depend on where they
/// differ, so that the token cannot be guessed byte by byte from response times.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    // The length of the token is public (64 hex digits); only its contents are secret.
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_params_may_be_absent() {
        let request = parse_request(br#"{"token":"t","id":7,"method":"status"}"#).expect("valid");
        assert_eq!(request.id, 7);
        assert_eq!(request.method, "status");
        assert!(request.params.is_null());
    }

    #[test]
    fn malformed_requests_name_the_problem_and_keep_the_id() {
        let reply = parse_request(b"{not json").expect_err("not JSON");
        assert_eq!(reply.error.expect("error").kind, "malformed");
        let reply = parse_request(br#"{"id":"a1","method":"status"}"#).expect_err("no token");
        assert_eq!(reply.id, "a1");
        let error = reply.error.expect("error");
        assert_eq!(error.kind, "malformed");
        assert!(error.message.contains("token"), "{}", error.message);
    }

    #[test]
    fn oversized_requests_are_refused_before_parsing() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        let reply = parse_request(&big).expect_err("too large");
        assert_eq!(reply.error.expect("error").kind, "tooLarge");
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("abcd", "abcd"));
        assert!(!token_matches("abce", "abcd"));
        assert!(!token_matches("abc", "abcd"));
        assert!(!token_matches("", "abcd"));
    }

    #[test]
    fn replies_carry_either_a_result_or_an_error() {
        let ok = serde_json::to_value(Reply::ok(1.into(), serde_json::json!({"a": 1}))).unwrap();
        assert_eq!(ok, serde_json::json!({"id": 1, "result": {"a": 1}}));
        let failed = serde_json::to_value(Reply::failed(
            "x".into(),
            ErrorBody::new("unauthorized", "no"),
        ))
        .unwrap();
        assert_eq!(
            failed,
            serde_json::json!({"id": "x", "error": {"kind": "unauthorized", "message": "no"}})
        );
    }
}
