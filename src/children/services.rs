//! Services: `<n>-headless` (peer DNS, all ports) and `<n>` (clients: REST and gRPC only).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{COMPONENT_DATABASE, object_meta, selector_labels};
use crate::qdrant::{GRPC_PORT, HTTP_PORT, P2P_PORT};
use crate::validate::Instance;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service: stable DNS names for the pods, published before they are ready so peers
/// can find each other while the cluster forms.
pub fn headless(inst: &Instance) -> Service {
    Service {
        metadata: object_meta(inst, inst.headless_service_name(), COMPONENT_DATABASE),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(inst)),
            ports: Some(vec![
                port("http", HTTP_PORT),
                port("grpc", GRPC_PORT),
                port("p2p", P2P_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service: REST and gRPC, never the peer port.
pub fn client(inst: &Instance) -> Service {
    Service {
        metadata: object_meta(inst, &inst.name, COMPONENT_DATABASE),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(inst)),
            ports: Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
