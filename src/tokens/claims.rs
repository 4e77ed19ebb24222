//! The JWT claims, shaped exactly as Qdrant (v1.18 and v1.19) parses them:
//!
//! ```json
//! { "exp": 1735689600,
//!   "access": "r" | "m" | [ {"collection": "docs", "access": "r" | "rw" | "prw"} ],
//!   "value_exists": {"collection": "users", "matches": [ {"key": "user_id", "value": "u1"} ]},
//!   "subject": "search/frontend" }
//! ```
//!
//! `exp` and `access` are always written: Qdrant lets a token without `exp` live forever and
//! gives a token without `access` full manage access. The per-collection `payload` restriction
//! of older Qdrant versions fails validation in v1.15+, so it cannot be expressed here. Of the
//! two subject claims Qdrant reads, only `subject` reaches its audit log; `sub` is not written.

use serde::{Deserialize, Serialize};

use crate::crd::{CollectionAccessLevel, GlobalAccess};

/// The claims of a token the operator signs.
///
/// Deserializing refuses unknown claims, so a token carrying anything the operator did not
/// write (`sub`, `iat`, a `payload` restriction) never counts as matching a spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    pub access: Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_exists: Option<ValueExists>,
    /// Written to Qdrant's audit log: `<namespace>/<QdrantAccessToken name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Qdrant's `access` claim: a global level, or a list of collections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Access {
    Global(GlobalAccess),
    Collections(Vec<CollectionClaim>),
}

/// One entry of a per-collection `access` claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CollectionClaim {
    pub collection: String,
    pub access: CollectionAccessLevel,
}

/// Qdrant's `value_exists` claim: the token is valid only while a point of `collection` matches
/// every entry of `matches`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ValueExists {
    pub collection: String,
    pub matches: Vec<PayloadMatchClaim>,
}

/// One `value_exists` condition: the payload at `key` (a Qdrant JSON path) equals `value`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PayloadMatchClaim {
    pub key: String,
    pub value: MatchValue,
}

/// A payload value Qdrant can match exactly (its `ValueVariants`): a string, a 64-bit integer
/// or a boolean. Floats, nulls, arrays and objects are not values Qdrant accepts here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum MatchValue {
    String(String),
    Integer(i64),
    Bool(bool),
}

impl Access {
    /// A short human summary: `global:r`, `global:m`, or `docs:r,users:rw` (cut after
    /// [`Access::SUMMARY_MAX`] characters with a count of the rest).
    pub fn summary(&self) -> String {
        match self {
            Access::Global(level) => format!("global:{}", level.as_str()),
            Access::Collections(list) => {
                let mut out = String::new();
                for (i, c) in list.iter().enumerate() {
                    let entry = format!("{}:{}", c.collection, c.access.as_str());
                    let sep = if out.is_empty() { "" } else { "," };
                    if out.len() + sep.len() + entry.len() > Self::SUMMARY_MAX {
                        out.push_str(&format!("{sep}… (+{} more)", list.len() - i));
                        break;
                    }
                    out.push_str(sep);
                    out.push_str(&entry);
                }
                out
            }
        }
    }

    /// Longest summary before it is cut (status and printer columns stay readable).
    pub const SUMMARY_MAX: usize = 120;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn serializes_to_qdrant_shapes() {
        let claims = Claims {
            exp: 1_735_689_600,
            access: Access::Collections(vec![
                CollectionClaim {
                    collection: "docs".into(),
                    access: CollectionAccessLevel::Read,
                },
                CollectionClaim {
                    collection: "users".into(),
                    access: CollectionAccessLevel::PointsReadWrite,
                },
            ]),
            value_exists: Some(ValueExists {
                collection: "tokens".into(),
                matches: vec![
                    PayloadMatchClaim {
                        key: "id".into(),
                        value: MatchValue::String("u1".into()),
                    },
                    PayloadMatchClaim {
                        key: "n".into(),
                        value: MatchValue::Integer(-3),
                    },
                    PayloadMatchClaim {
                        key: "on".into(),
                        value: MatchValue::Bool(true),
                    },
                ],
            }),
            subject: Some("search/frontend".into()),
        };
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            value,
            json!({
                "exp": 1_735_689_600u64,
                "access": [{"collection": "docs", "access": "r"}, {"collection": "users", "access": "prw"}],
                "value_exists": {"collection": "tokens", "matches": [
                    {"key": "id", "value": "u1"}, {"key": "n", "value": -3}, {"key": "on", "value": true}
                ]},
                "subject": "search/frontend"
            })
        );
        let back: Claims = serde_json::from_value(value).unwrap();
        assert_eq!(back, claims);
    }

    #[test]
    fn global_access_is_a_bare_string_and_optional_claims_are_omitted() {
        let claims = Claims {
            exp: 10,
            access: Access::Global(GlobalAccess::Manage),
            value_exists: None,
            subject: None,
        };
        assert_eq!(
            serde_json::to_string(&claims).unwrap(),
            r#"{"exp":10,"access":"m"}"#
        );
    }

    #[test]
    fn unknown_claims_and_payload_restrictions_do_not_parse() {
        for text in [
            r#"{"exp":1,"access":"r","sub":"x"}"#,
            r#"{"exp":1,"access":[{"collection":"a","access":"r","payload":{"k":"v"}}]}"#,
            r#"{"access":"r"}"#,
            r#"{"exp":1}"#,
            r#"{"exp":1,"access":"rw"}"#,
        ] {
            assert!(serde_json::from_str::<Claims>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn summary_is_short() {
        assert_eq!(Access::Global(GlobalAccess::Read).summary(), "global:r");
        let two = Access::Collections(vec![
            CollectionClaim {
                collection: "docs".into(),
                access: CollectionAccessLevel::Read,
            },
            CollectionClaim {
                collection: "users".into(),
                access: CollectionAccessLevel::ReadWrite,
            },
        ]);
        assert_eq!(two.summary(), "docs:r,users:rw");
        let many = Access::Collections(
            (0..100)
                .map(|i| CollectionClaim {
                    collection: format!("collection-{i:03}"),
                    access: CollectionAccessLevel::Read,
                })
                .collect(),
        );
        let s = many.summary();
        assert!(s.len() <= Access::SUMMARY_MAX + 20, "{s}");
        assert!(s.starts_with("collection-000:r,collection-001:r"), "{s}");
        assert!(s.ends_with("more)"), "{s}");
    }
}
