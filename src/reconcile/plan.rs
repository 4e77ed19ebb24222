//! Planning: what of the validated spec can be applied to the cluster as it is now. Pure.
//!
//! Some changes cannot be made safely by rewriting objects, so the plan keeps the cluster as it
//! is for those and says why:
//! - scaling down without an acknowledgment: Qdrant keeps a removed peer in its consensus and
//!   the shards it held would be lost; the user moves the shards off and removes the peers with
//!   Qdrant's API first (the operator cannot: its pods may reach only the API server), then
//!   says so with [`PEERS_REMOVED_ANNOTATION`] set to the new replica count;
//! - scaling a cluster down to 1 replica, even acknowledged: 1 replica turns Qdrant's cluster
//!   mode off ([`Instance::cluster_mode`]), and a node whose storage holds the cluster's raft
//!   state is not known to start safely that way;
//! - an acknowledgment that is not a number or names another count than `spec.replicas`: the
//!   replicas stay as they are (neither down nor up), so a stale acknowledgment never carries
//!   over to a later scale-down;
//! - changing the data volume size or class: StatefulSet claim templates are immutable;
//! - switching `spec.tls.enabled` on an instance that has ever run more than one replica
//!   ([`tls_switch`]): Qdrant keeps every peer's URI, scheme included, in its Raft state, so pods
//!   restarted with the other setting could not reach each other. This one stops the whole
//!   reconcile (nothing is applied) rather than keeping the old value: the TLS settings the pods
//!   run with cannot be rebuilt from the StatefulSet alone.
//!
//! An acknowledgment is used once: when the StatefulSet runs the replicas it names (after the
//! scale-down it allowed, or a count that was already running), [`Plan::consume_annotation`]
//! tells the reconcile to remove it. Not at the write: a reconcile on a cache that does not show
//! the write yet would find no acknowledgment and scale back up.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::SecureQdrantStatus;
use crate::statefulset_view::{ClaimSpec, StatefulSetView};
use crate::validate::Instance;

pub use crate::crd::PEERS_REMOVED_ANNOTATION;

/// The longest part of an annotation value quoted back in a message.
const QUOTED_VALUE_MAX: usize = 40;

/// `kubectl annotate` of the instance with `change` (`key=value`, or `key-` to remove it).
fn kubectl_annotate(namespace: &str, name: &str, change: &str) -> String {
    format!("kubectl annotate sq {name} -n {namespace} {change}")
}

/// The pods a scale-down from `from` to `to` replicas removes, for messages: the highest
/// ordinals, `<n>-<to>` to `<n>-<from - 1>`.
pub fn removed_pods(name: &str, from: i32, to: i32) -> String {
    let last = from - 1;
    if to == last {
        format!("pod {name}-{to}")
    } else {
        format!("pods {name}-{to} to {name}-{last}")
    }
}

/// `value`, shortened and quoted so it reads safely in a message.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_VALUE_MAX) {
        Some((end, _)) => format!("{:?}...", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// A change the operator refuses to make, with the reason shown to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A scale-down without (a matching) [`PEERS_REMOVED_ANNOTATION`].
    ScaleDown {
        namespace: String,
        name: String,
        from: i32,
        to: i32,
    },
    /// A cluster scaled down to a single node, acknowledged or not.
    ScaleDownToSingleNode {
        namespace: String,
        name: String,
        from: i32,
        acknowledged: bool,
    },
    /// [`PEERS_REMOVED_ANNOTATION`] is not a replica count.
    PeersRemovedInvalid {
        namespace: String,
        name: String,
        value: String,
        kept: i32,
    },
    /// [`PEERS_REMOVED_ANNOTATION`] names another count than `spec.replicas`.
    PeersRemovedMismatch {
        namespace: String,
        name: String,
        value: i32,
        replicas: i32,
        kept: i32,
    },
    StorageChange {
        field: &'static str,
        from: String,
        to: String,
    },
    /// `spec.tls.enabled` switched on an instance that has run more than one replica.
    TlsSwitch {
        namespace: String,
        name: String,
        /// Whether the pods run with TLS.
        running: bool,
    },
}

impl Refusal {
    /// Condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ScaleDown { .. } | Refusal::ScaleDownToSingleNode { .. } => "ScaleDownRefused",
            Refusal::PeersRemovedInvalid { .. } => "PeersRemovedInvalid",
            Refusal::PeersRemovedMismatch { .. } => "PeersRemovedMismatch",
            Refusal::StorageChange { .. } => "StorageChangeRefused",
            Refusal::TlsSwitch { .. } => "TLSChangeRefused",
        }
    }

    /// A message telling the user what happened and what to do.
    pub fn message(&self) -> String {
        match self {
            Refusal::ScaleDown {
                namespace,
                name,
                from,
                to,
            } => format!(
                "scale-down from {from} to {to} replicas refused: Qdrant would keep the removed \
                 peers in its consensus and their shards would be lost. Move every shard off the \
                 peers of {pods} and remove those peers with Qdrant's API \
                 (DELETE /cluster/peer/<id>), then acknowledge it with `{command}`; the cluster \
                 keeps {from} replicas meanwhile",
                pods = removed_pods(name, *from, *to),
                command =
                    kubectl_annotate(namespace, name, &format!("{PEERS_REMOVED_ANNOTATION}={to}")),
            ),
            Refusal::ScaleDownToSingleNode {
                namespace,
                name,
                from,
                acknowledged,
            } => single_node_message(namespace, name, *from, *acknowledged),
            Refusal::PeersRemovedInvalid {
                namespace,
                name,
                value,
                kept,
            } => format!(
                "annotation {PEERS_REMOVED_ANNOTATION} is {value}, not a replica count: nothing \
                 was scaled, the StatefulSet keeps {kept} replicas. Once the peers above the new \
                 count are removed from Qdrant, set it to that count (equal to spec.replicas), \
                 or remove it with `{command}`",
                value = quoted(value),
                command =
                    kubectl_annotate(namespace, name, &format!("{PEERS_REMOVED_ANNOTATION}-")),
            ),
            Refusal::PeersRemovedMismatch {
                namespace,
                name,
                value,
                replicas,
                kept,
            } => format!(
                "annotation {PEERS_REMOVED_ANNOTATION} is {value} but spec.replicas is \
                 {replicas}: it acknowledges a scale-down to exactly spec.replicas, so nothing \
                 was scaled, the StatefulSet keeps {kept} replicas. Set spec.replicas to {value} \
                 if that is the count the peers were removed down to, or remove the annotation \
                 with `{command}`",
                command =
                    kubectl_annotate(namespace, name, &format!("{PEERS_REMOVED_ANNOTATION}-")),
            ),
            Refusal::StorageChange { field, from, to } => format!(
                "{field} cannot change from {from} to {to}: StatefulSet volume claims are \
                 immutable. Expand the PVCs directly (if the StorageClass allows it) and set \
                 {field} back to {from}"
            ),
            Refusal::TlsSwitch {
                namespace,
                name,
                running,
            } => tls_switch_message(namespace, name, *running),
        }
    }
}

/// What [`Refusal::ScaleDownToSingleNode`] tells the user.
fn single_node_message(namespace: &str, name: &str, from: i32, acknowledged: bool) -> String {
    format!(
        "scale-down from {from} to 1 replica refused{even}: with 1 replica Qdrant's \
         cluster mode is turned off, and a node whose storage holds the cluster's raft \
         state is not known to start safely without it. Keep at least 2 replicas, or \
         move the data to a new single-node SecureQdrant with snapshots; set \
         spec.replicas back to {from}{remove}; the cluster keeps {from} replicas \
         meanwhile",
        even = if acknowledged {
            format!(" even with {PEERS_REMOVED_ANNOTATION}")
        } else {
            String::new()
        },
        remove = if acknowledged {
            format!(
                " and remove the annotation with `{}`",
                kubectl_annotate(namespace, name, &format!("{PEERS_REMOVED_ANNOTATION}-"))
            )
        } else {
            String::new()
        },
    )
}

/// What [`Refusal::TlsSwitch`] tells the user.
fn tls_switch_message(namespace: &str, name: &str, running: bool) -> String {
    format!(
        "spec.tls.enabled cannot change from {running} to {wanted}: this instance has \
         run more than one replica (status.clustered), and Qdrant keeps every peer's \
         URI with its scheme ({scheme}://) in its Raft state, so pods restarted with the \
         other setting could not reach each other and the cluster would split. Nothing \
         was applied and the pods keep running as they are (certificates are not \
         renewed while this stands). Set spec.tls.enabled back to {running} with \
         `kubectl patch sq {name} -n {namespace} --type merge -p \
         '{{\"spec\":{{\"tls\":{{\"enabled\":{running}}}}}}}'`; to run with TLS {want}, \
         create a new SecureQdrant with spec.tls.enabled: {wanted} and move the \
         collections to it with snapshots",
        wanted = !running,
        scheme = if running { "https" } else { "http" },
        want = if running { "off" } else { "on" },
    )
}

/// What an instance has been through, as far as the operator recorded it (never forgotten).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// It has run (or been asked to run) more than one replica: `status.clustered`.
    pub clustered: bool,
    /// At least two peers of its cluster were seen ready: `status.clusterFormed`.
    pub formed: bool,
}

impl History {
    /// The history recorded in `status`, with what the StatefulSet shows now: a StatefulSet
    /// asked for or running more than one replica makes the instance clustered (also for an
    /// instance that predates `status.clustered`, or whose status write was lost), and two ready
    /// pods of a cluster-mode StatefulSet that has rolled out (every pod runs the current
    /// template: no single-node pod 0 left from a scale-up) mean the cluster formed.
    pub fn observe(status: Option<&SecureQdrantStatus>, current: Option<&StatefulSetView>) -> Self {
        let spec_replicas = current
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let sts_status = current.and_then(|s| s.status.as_ref());
        let running = sts_status.map(|s| s.replicas).unwrap_or(0);
        let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
        let rolled_out = sts_status.is_some_and(|s| {
            s.observed_generation >= current.and_then(|c| c.metadata.generation)
                && s.updated_replicas == Some(spec_replicas)
                && s.current_revision.is_some()
                && s.current_revision == s.update_revision
        });
        History {
            clustered: status.is_some_and(|s| s.clustered) || spec_replicas > 1 || running > 1,
            formed: status.is_some_and(|s| s.cluster_formed)
                || (spec_replicas > 1 && ready > 1 && rolled_out),
        }
    }
}

/// Whether the pods of the instance run with TLS: from the StatefulSet's pod template (its
/// TLS fingerprint annotation, present exactly when TLS is on; the cache keeps template
/// annotations readable, not the pod spec), else, when there is no StatefulSet, from the
/// endpoints in `status`. None when neither tells (a new instance).
pub fn running_tls(
    current: Option<&StatefulSetView>,
    status: Option<&SecureQdrantStatus>,
) -> Option<bool> {
    match current.and_then(|s| s.spec.as_ref()) {
        Some(spec) => Some(
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .is_some_and(|a| a.contains_key(crate::tls::TLS_FINGERPRINT_ANNOTATION)),
        ),
        None => status
            .and_then(|s| s.endpoints.as_ref())
            .map(|e| e.rest.starts_with("https://")),
    }
}

/// The refusal of a TLS switch: `inst` asks for the other setting than the pods run with
/// (`running`), on an instance that has run more than one replica. A never-clustered single node
/// may switch: it has no peer URIs in use (its pod restarts with the other scheme).
pub fn tls_switch(inst: &Instance, history: History, running: Option<bool>) -> Option<Refusal> {
    let running = running?;
    (history.clustered && running != inst.tls.is_some()).then(|| Refusal::TlsSwitch {
        namespace: inst.namespace.clone(),
        name: inst.name.clone(),
        running,
    })
}

/// A scale-down the user acknowledged, applied by the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleDown {
    pub from: i32,
    pub to: i32,
}

/// The instance to build, adjusted to what can be applied, and the refused changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub instance: Instance,
    pub refusals: Vec<Refusal>,
    /// The acknowledged scale-down this plan applies.
    pub scale_down: Option<ScaleDown>,
    /// [`PEERS_REMOVED_ANNOTATION`] has served its purpose (the StatefulSet runs the replica
    /// count it names): the reconcile removes it, so it never allows a later scale-down.
    pub consume_annotation: bool,
}

/// Plans the instance against the StatefulSet that exists (if any), with the acknowledgment
/// the instance carries ([`Instance::peers_removed`]).
pub fn plan(mut inst: Instance, current: Option<&StatefulSetView>) -> Plan {
    let spec = current.and_then(|s| s.spec.as_ref());
    let running = spec.map(|s| s.replicas.unwrap_or(1));
    let (scale_down, consume_annotation, mut refusals) = replicas(&mut inst, running);
    let claim = spec
        .and_then(|s| s.volume_claim_templates.as_ref())
        .and_then(|claims| {
            claims
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some("storage"))
        })
        .and_then(|c| c.spec.as_ref());
    if let Some(claim) = claim {
        refusals.extend(keep_storage(&mut inst, claim));
    }
    Plan {
        instance: inst,
        refusals,
        scale_down,
        consume_annotation,
    }
}

/// Sets the replica count the plan applies (`spec.replicas`, or the `running` count when the
/// change is refused): the acknowledged scale-down it makes, whether the acknowledgment is used
/// up, and the refusal if any.
fn replicas(inst: &mut Instance, running: Option<i32>) -> (Option<ScaleDown>, bool, Vec<Refusal>) {
    match scale(inst, running, inst.peers_removed.as_deref()) {
        // spec.replicas is applied; the acknowledgment naming it is used up once the StatefulSet
        // runs that count (not when it is written: a reconcile on a cache that does not show the
        // write yet would find no acknowledgment and scale back up).
        Scale::As { scale_down } => (
            scale_down,
            inst.peers_removed.is_some() && running == Some(inst.replicas),
            Vec::new(),
        ),
        Scale::Keep(refusal) => {
            inst.replicas = running.unwrap_or(inst.replicas);
            (None, false, vec![refusal])
        }
    }
}

/// Keeps the data volume's size and class as the StatefulSet's claim template has them (claim
/// templates are immutable), refusing a change of either.
fn keep_storage(inst: &mut Instance, claim: &ClaimSpec) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    let size = claim
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    if let Some(size) = size
        && size != &inst.storage.size
    {
        refusals.push(Refusal::StorageChange {
            field: "spec.storage.size",
            from: size.0.clone(),
            to: inst.storage.size.0.clone(),
        });
        inst.storage.size = Quantity(size.0.clone());
    }
    if claim.storage_class_name != inst.storage.class {
        let shown = |class: &Option<String>| class.clone().unwrap_or_else(|| "(default)".into());
        refusals.push(Refusal::StorageChange {
            field: "spec.storage.storageClassName",
            from: shown(&claim.storage_class_name),
            to: shown(&inst.storage.class),
        });
        inst.storage.class = claim.storage_class_name.clone();
    }
    refusals
}

/// What to do with the replica count.
enum Scale {
    /// Apply `spec.replicas` (an acknowledged scale-down among others).
    As { scale_down: Option<ScaleDown> },
    /// Keep the replicas running, for this reason.
    Keep(Refusal),
}

/// `value` as a replica count: decimal digits only.
fn replica_count(value: &str) -> Option<i32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Decides the replica count: `spec.replicas` unless it is a scale-down from `running` that is
/// not acknowledged (or not safe), or the acknowledgment is wrong.
fn scale(inst: &Instance, running: Option<i32>, peers_removed: Option<&str>) -> Scale {
    let (namespace, name) = (inst.namespace.clone(), inst.name.clone());
    let wanted = inst.replicas;
    let kept = running.unwrap_or(wanted);
    let acknowledged = match peers_removed.map(|v| (v, replica_count(v))) {
        None => None,
        Some((value, None)) => {
            return Scale::Keep(Refusal::PeersRemovedInvalid {
                namespace,
                name,
                value: value.to_owned(),
                kept,
            });
        }
        Some((_, Some(value))) if value != wanted => {
            return Scale::Keep(Refusal::PeersRemovedMismatch {
                namespace,
                name,
                value,
                replicas: wanted,
                kept,
            });
        }
        Some((_, Some(value))) => Some(value),
    };
    let Some(from) = running.filter(|r| wanted < *r) else {
        return Scale::As { scale_down: None };
    };
    if wanted == 1 {
        // Cluster mode follows the replica count: a cluster would restart as a single node.
        return Scale::Keep(Refusal::ScaleDownToSingleNode {
            namespace,
            name,
            from,
            acknowledged: acknowledged.is_some(),
        });
    }
    match acknowledged {
        Some(_) => Scale::As {
            scale_down: Some(ScaleDown { from, to: wanted }),
        },
        None => Scale::Keep(Refusal::ScaleDown {
            namespace,
            name,
            from,
            to: wanted,
        }),
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::crd::SecureQdrant;
    use crate::settings::Settings;
    use crate::statefulset_view::Spec;
    use crate::validate::validate;

    /// `search/vectors` with `replicas`, and the acknowledgment `ack` when given.
    fn sq(replicas: i32, ack: Option<&str>) -> SecureQdrant {
        let mut sq: SecureQdrant = serde_json::from_value(serde_json::json!({
            "apiVersion": "secureqdrant.dev/v1alpha1",
            "kind": "SecureQdrant",
            "metadata": {"name": "vectors", "namespace": "search", "uid": "u"},
            "spec": {"replicas": replicas},
        }))
        .expect("a SecureQdrant");
        if let Some(value) = ack {
            sq.annotations_mut()
                .insert(PEERS_REMOVED_ANNOTATION.to_owned(), value.to_owned());
        }
        sq
    }

    /// A StatefulSet running `replicas` (no claim templates: only the count is planned here).
    fn running(replicas: i32) -> StatefulSetView {
        StatefulSetView {
            spec: Some(Spec {
                replicas: Some(replicas),
                ..Spec::default()
            }),
            ..StatefulSetView::default()
        }
    }

    fn plan_of(replicas: i32, ack: Option<&str>, current: Option<i32>) -> Plan {
        let sq = sq(replicas, ack);
        let inst = validate(&sq, &Settings::default()).expect("a valid spec");
        let current = current.map(running);
        plan(inst, current.as_ref())
    }

    /// The acknowledgment as the validated instance carries it.
    fn peers_removed(sq: &SecureQdrant) -> Option<String> {
        validate(sq, &Settings::default())
            .expect("a valid spec")
            .peers_removed
    }

    #[test]
    fn the_annotation_is_read_from_the_resource() {
        assert_eq!(peers_removed(&sq(3, None)), None);
        assert_eq!(peers_removed(&sq(3, Some("3"))).as_deref(), Some("3"));
    }

    #[test]
    fn a_scale_down_without_acknowledgment_keeps_the_replicas_and_names_the_command() {
        let p = plan_of(2, None, Some(3));
        assert_eq!(p.instance.replicas, 3);
        assert_eq!(p.scale_down, None);
        assert!(!p.consume_annotation);
        assert_eq!(p.refusals.len(), 1);
        assert_eq!(p.refusals[0].reason(), "ScaleDownRefused");
        let message = p.refusals[0].message();
        assert!(message.contains("from 3 to 2"), "{message}");
        assert!(message.contains("peers of pod vectors-2 and"), "{message}");
        let message = plan_of(2, None, Some(5)).refusals[0].message();
        assert!(
            message.contains("peers of pods vectors-2 to vectors-4 and"),
            "{message}"
        );
        assert!(
            message.contains(
                "`kubectl annotate sq vectors -n search secureqdrant.dev/peers-removed=2`"
            ),
            "{message}"
        );
    }

    #[test]
    fn an_acknowledged_scale_down_is_applied_and_uses_the_annotation_up() {
        let p = plan_of(3, Some("3"), Some(5));
        assert_eq!(p.instance.replicas, 3);
        assert!(p.instance.cluster_mode());
        assert_eq!(p.refusals, vec![]);
        assert_eq!(p.scale_down, Some(ScaleDown { from: 5, to: 3 }));
        assert!(
            !p.consume_annotation,
            "kept until the StatefulSet runs 3: a reconcile on a cache without the write needs it"
        );
        let p = plan_of(3, Some("3"), Some(3));
        assert_eq!(p.scale_down, None);
        assert!(p.consume_annotation, "used up once the StatefulSet runs 3");
    }

    #[test]
    fn a_wrong_acknowledgment_changes_no_replica_count_up_or_down() {
        // (spec.replicas, annotation, running): a mismatch, down, level and up.
        for (replicas, ack, current) in [(2, "3", 5), (5, "3", 5), (7, "3", 5), (3, "2", 3)] {
            let p = plan_of(replicas, Some(ack), Some(current));
            assert_eq!(p.instance.replicas, current, "{replicas} {ack} {current}");
            assert_eq!(p.scale_down, None);
            assert!(!p.consume_annotation, "a wrong annotation stays visible");
            assert_eq!(p.refusals.len(), 1);
            assert_eq!(p.refusals[0].reason(), "PeersRemovedMismatch");
            let message = p.refusals[0].message();
            assert!(
                message.contains(&format!("is {ack} but spec.replicas is {replicas}")),
                "{message}"
            );
            assert!(
                message.contains(&format!("keeps {current} replicas")),
                "{message}"
            );
            assert!(
                message.contains(
                    "`kubectl annotate sq vectors -n search secureqdrant.dev/peers-removed-`"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn an_acknowledgment_that_is_not_a_count_is_refused_and_quoted_safely() {
        for ack in ["", "three", "3 ", "+3", "-3", "3.0", "99999999999"] {
            let p = plan_of(3, Some(ack), Some(5));
            assert_eq!(p.instance.replicas, 5, "{ack:?}");
            assert_eq!(p.scale_down, None);
            assert!(!p.consume_annotation);
            assert_eq!(p.refusals.len(), 1);
            assert_eq!(p.refusals[0].reason(), "PeersRemovedInvalid", "{ack:?}");
            let message = p.refusals[0].message();
            assert!(message.contains(&format!("{ack:?}")), "{message}");
        }
        let long = "x".repeat(5000);
        let message = plan_of(3, Some(&long), Some(5)).refusals[0].message();
        assert!(message.len() < 800, "{message}");
        let odd = "a\nb\u{7}";
        let message = plan_of(3, Some(odd), Some(5)).refusals[0].message();
        assert!(
            !message.contains('\n') && !message.contains('\u{7}'),
            "{message:?}"
        );
    }

    #[test]
    fn a_cluster_is_not_scaled_to_one_replica_even_acknowledged() {
        for ack in [None, Some("1")] {
            let p = plan_of(1, ack, Some(3));
            assert_eq!(p.instance.replicas, 3, "{ack:?}");
            assert!(p.instance.cluster_mode(), "cluster mode stays on");
            assert_eq!(p.scale_down, None);
            assert!(!p.consume_annotation);
            assert_eq!(p.refusals.len(), 1);
            assert_eq!(p.refusals[0].reason(), "ScaleDownRefused");
            let message = p.refusals[0].message();
            assert!(message.contains("from 3 to 1 replica refused"), "{message}");
            assert!(message.contains("cluster mode"), "{message}");
            assert_eq!(
                message.contains("even with secureqdrant.dev/peers-removed"),
                ack.is_some(),
                "{message}"
            );
            // No advice to acknowledge what would be refused anyway.
            assert!(!message.contains("peers-removed=1"), "{message}");
        }
    }

    #[test]
    fn an_acknowledgment_naming_the_count_applied_is_used_up_without_a_scale_down() {
        // Already at that count: used up. A scale-up to it and a first creation: applied, and
        // used up once the StatefulSet runs that count.
        for (replicas, ack, current, used) in [
            (3, "3", Some(3), true),
            (5, "5", Some(3), false),
            (3, "3", None, false),
        ] {
            let p = plan_of(replicas, Some(ack), current);
            assert_eq!(p.instance.replicas, replicas);
            assert_eq!(p.refusals, vec![]);
            assert_eq!(p.scale_down, None);
            assert_eq!(p.consume_annotation, used, "{replicas} {ack} {current:?}");
        }
    }

    #[test]
    fn without_the_annotation_nothing_is_consumed_and_scale_up_is_free() {
        for (replicas, current) in [(3, Some(3)), (5, Some(3)), (1, None), (3, None)] {
            let p = plan_of(replicas, None, current);
            assert_eq!(p.instance.replicas, replicas);
            assert_eq!(p.refusals, vec![]);
            assert_eq!(p.scale_down, None);
            assert!(!p.consume_annotation);
        }
    }

    fn with_tls(enabled: bool) -> Instance {
        let mut sq = sq(3, None);
        sq.spec.tls.enabled = enabled;
        validate(&sq, &Settings::default()).expect("a valid spec")
    }

    /// A StatefulSet asked for `replicas`, `running` of them, `ready` ready, its pods with or
    /// without TLS (as the operator builds it: the TLS fingerprint on the template).
    fn sts(replicas: i32, running: i32, ready: i32, tls: bool) -> StatefulSetView {
        use crate::statefulset_view::{Annotated, Status, Template};
        let annotation = (
            crate::tls::TLS_FINGERPRINT_ANNOTATION.to_owned(),
            "f".to_owned(),
        );
        StatefulSetView {
            spec: Some(Spec {
                replicas: Some(replicas),
                template: Template {
                    metadata: Some(Annotated {
                        annotations: Some(tls.then_some(annotation).into_iter().collect()),
                    }),
                },
                ..Spec::default()
            }),
            status: Some(Status {
                replicas: running,
                ready_replicas: Some(ready),
                updated_replicas: Some(replicas),
                current_revision: Some("r1".to_owned()),
                update_revision: Some("r1".to_owned()),
                ..Status::default()
            }),
            ..StatefulSetView::default()
        }
    }

    fn recorded(clustered: bool, formed: bool) -> SecureQdrantStatus {
        SecureQdrantStatus {
            clustered,
            cluster_formed: formed,
            ..SecureQdrantStatus::default()
        }
    }

    #[test]
    fn a_tls_switch_is_refused_once_the_instance_has_run_more_than_one_replica() {
        for (running, wanted) in [(true, false), (false, true)] {
            let current = sts(3, 3, 3, running);
            let history = History::observe(None, Some(&current));
            assert!(history.clustered);
            let refusal = tls_switch(
                &with_tls(wanted),
                history,
                running_tls(Some(&current), None),
            )
            .expect("refused");
            assert_eq!(refusal.reason(), "TLSChangeRefused");
            let message = refusal.message();
            assert!(
                message.contains(&format!(
                    "spec.tls.enabled cannot change from {running} to {wanted}"
                )) && message.contains("create a new SecureQdrant")
                    && message.contains("snapshots")
                    && message.contains("Nothing was applied"),
                "{message}"
            );
        }
        // Unchanged: nothing to refuse.
        let current = sts(3, 3, 3, true);
        let history = History::observe(None, Some(&current));
        assert_eq!(
            tls_switch(&with_tls(true), history, running_tls(Some(&current), None)),
            None
        );
    }

    #[test]
    fn three_to_one_then_switch_is_refused_by_the_recorded_status() {
        // The StatefulSet runs 1 replica now; only the status remembers the cluster.
        let current = sts(1, 1, 1, true);
        assert!(!History::observe(None, Some(&current)).clustered);
        let history = History::observe(Some(&recorded(true, true)), Some(&current));
        assert!(history.clustered);
        assert!(tls_switch(&with_tls(false), history, running_tls(Some(&current), None)).is_some());
        // Without a StatefulSet (deleted), the endpoints in status tell the running scheme.
        let status = SecureQdrantStatus {
            endpoints: Some(crate::crd::Endpoints {
                rest: "https://vectors.search.svc:6333".to_owned(),
                grpc: "https://vectors.search.svc:6334".to_owned(),
            }),
            ..recorded(true, false)
        };
        let history = History::observe(Some(&status), None);
        assert_eq!(running_tls(None, Some(&status)), Some(true));
        assert!(tls_switch(&with_tls(false), history, running_tls(None, Some(&status))).is_some());
    }

    #[test]
    fn a_never_clustered_single_node_may_switch_tls() {
        let current = sts(1, 1, 1, true);
        let history = History::observe(Some(&recorded(false, false)), Some(&current));
        assert_eq!(history, History::default());
        assert_eq!(
            tls_switch(&with_tls(false), history, running_tls(Some(&current), None)),
            None
        );
        // A new instance: nothing runs, nothing to compare.
        assert_eq!(running_tls(None, None), None);
        assert_eq!(
            tls_switch(
                &with_tls(false),
                History {
                    clustered: true,
                    formed: true
                },
                None
            ),
            None
        );
    }

    #[test]
    fn the_history_is_recorded_from_the_statefulset_and_never_forgotten() {
        // Asked for 3, none running yet: clustered (pods may start any moment), not formed.
        assert_eq!(
            History::observe(None, Some(&sts(3, 0, 0, true))),
            History {
                clustered: true,
                formed: false
            }
        );
        // One ready peer is not a formed cluster; two are.
        assert!(!History::observe(None, Some(&sts(3, 3, 1, true))).formed);
        assert!(History::observe(None, Some(&sts(3, 3, 2, true))).formed);
        // A single node with one ready pod never forms a cluster.
        assert!(!History::observe(None, Some(&sts(1, 1, 1, true))).formed);
        // Mid-roll (a scale-up from a single node: pod 0 still runs the old template), ready
        // pods do not mean a formed cluster.
        let mut rolling = sts(3, 3, 3, true);
        rolling.status.as_mut().unwrap().update_revision = Some("r2".to_owned());
        assert!(!History::observe(None, Some(&rolling)).formed);
        // Recorded once, kept whatever the StatefulSet shows later.
        assert_eq!(
            History::observe(Some(&recorded(true, true)), Some(&sts(3, 3, 0, true))),
            History {
                clustered: true,
                formed: true
            }
        );
    }
}
