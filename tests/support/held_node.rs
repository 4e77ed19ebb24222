//! A fake (kwok) Node of one test's own, to hold a StatefulSet rollout on the real control plane.
//!
//! The test's instance is pinned to the node (`spec.pod.nodeSelector`). While the node is
//! cordoned (`spec.unschedulable`, set by the test on ITS node only, never on the shared ones),
//! a pod the real StatefulSet controller re-creates with a new template stays Pending, so the
//! StatefulSet's real status does not report the rollout done; uncordoned, the real scheduler
//! places the pod, kwok makes it Running and Ready, and the controller finishes the rollout.
//! Pods already running are not touched by a cordon.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::control_plane::eventually;

/// The node label a test's instance selects.
pub const NODE_LABEL: &str = "test.secureqdrant.dev/node";

/// How long a released rollout may take (scheduling, kwok, one pod at a time).
pub const ROLLOUT_WITHIN: Duration = Duration::from_secs(180);

pub struct HeldNode {
    pub name: String,
    admin: Client,
}

impl HeldNode {
    /// Creates node `hold-<ns>` (cordoned: nothing runs on it until `release`), waits until kwok
    /// reports it Ready and takes off the not-ready taint admission put on it (no node lifecycle
    /// controller runs to do it, as for the control plane's own nodes).
    pub async fn create(admin: &Client, ns: &str) -> HeldNode {
        let name = format!("hold-{ns}");
        let nodes = Api::<Node>::all(admin.clone());
        let capacity = json!({"cpu": "32", "memory": "256Gi", "pods": "110",
                              "ephemeral-storage": "1Ti"});
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "type": "kwok", NODE_LABEL: name},
                "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {"unschedulable": true},
            "status": {"capacity": capacity, "allocatable": capacity},
        }))
        .unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("node {name}: {e}"));
        eventually(Duration::from_secs(120), || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move {
                let mut n = nodes.get(&name).await.map_err(|e| e.to_string())?;
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if !ready {
                    return Err(format!("node {name} not Ready yet"));
                }
                let spec = n.spec.get_or_insert_default();
                let taints = spec.taints.take().unwrap_or_default();
                let keep: Vec<_> = taints
                    .iter()
                    .filter(|t| t.key != "node.kubernetes.io/not-ready")
                    .cloned()
                    .collect();
                if keep.len() == taints.len() {
                    return Ok(());
                }
                spec.taints = Some(keep);
                nodes
                    .replace(&name, &PostParams::default(), &n)
                    .await
                    .map_err(|e| e.to_string())?;
                Err("taint removed, checking again".to_owned())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"));
        HeldNode {
            name,
            admin: admin.clone(),
        }
    }

    /// `spec.pod` of an instance whose pods may run only on this node.
    pub fn pod_spec(&self) -> Value {
        json!({"nodeSelector": {NODE_LABEL: self.name}})
    }

    async fn cordon(&self, unschedulable: bool) {
        Api::<Node>::all(self.admin.clone())
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}})),
            )
            .await
            .unwrap_or_else(|e| panic!("cordon {}: {e}", self.name));
    }

    /// New pods stay Pending.
    pub async fn hold(&self) {
        self.cordon(true).await
    }

    /// New pods are scheduled (and kwok makes them Ready).
    pub async fn release(&self) {
        self.cordon(false).await
    }

    /// Releases the node, waits until StatefulSet `ns/name` has rolled out its current
    /// template, and holds the node again. Returns the StatefulSet then.
    pub async fn roll_out(&self, ns: &str, name: &str) -> StatefulSet {
        self.release().await;
        let sts = wait_rolled_out(&self.admin, ns, name).await;
        self.hold().await;
        sts
    }

    pub async fn delete(&self) {
        let _ = Api::<Node>::all(self.admin.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// What the operator takes for "rolled out" (src/rollout.rs `rolled_out_annotation`), from
/// the real StatefulSet controller's status: it saw the current generation, every replica runs
/// the update revision, which is the current one, and every replica is ready.
pub fn rolled_out(sts: &StatefulSet) -> bool {
    let (Some(spec), Some(status)) = (&sts.spec, &sts.status) else {
        return false;
    };
    let replicas = spec.replicas.unwrap_or(1);
    status.observed_generation >= sts.metadata.generation
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision
        && status.updated_replicas == Some(replicas)
        && status.ready_replicas == Some(replicas)
}

/// Waits until StatefulSet `ns/name` has rolled out (see `rolled_out`).
pub async fn wait_rolled_out(admin: &Client, ns: &str, name: &str) -> StatefulSet {
    let api = Api::<StatefulSet>::namespaced(admin.clone(), ns);
    eventually(ROLLOUT_WITHIN, || {
        let api = api.clone();
        async move {
            let sts = api.get(name).await.map_err(|e| e.to_string())?;
            if rolled_out(&sts) {
                Ok(sts)
            } else {
                Err(format!(
                    "not rolled out: generation {:?}, status {:?}",
                    sts.metadata.generation, sts.status
                ))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("StatefulSet {ns}/{name}: {e}"))
}
