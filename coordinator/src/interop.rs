//! Standard gRPC services for generic clients, load balancers and probes:
//!
//! * health checking (`grpc.health.v1.Health`): SERVING for the server as a
//!   whole (`""`) and for both of Ridgeline's services while the
//!   coordinator serves, NOT_SERVING from the moment shutdown starts;
//! * server reflection (`grpc.reflection.v1` and `v1alpha`), so `grpcurl
//!   -plaintext HOST:PORT list` and `describe` work without the `.proto`
//!   files.
//!
//! Neither needs a bearer token: they reveal nothing secret (the protocol
//! is public), and probes cannot carry one. Tokens are checked inside each
//! Ridgeline method ([`crate::auth`]), so these services, added next to
//! them, stay open.

use ridgeline_common::proto::v1::{job_service_server, worker_service_server, FILE_DESCRIPTOR_SET};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

/// The names health checking answers for: the server as a whole, then each
/// service.
pub const HEALTH_SERVICES: [&str; 3] = [
    "",
    job_service_server::SERVICE_NAME,
    worker_service_server::SERVICE_NAME,
];

/// The health service, every name in [`HEALTH_SERVICES`] SERVING, and the
/// reporter that changes them. When `shutdown` is cancelled every name
/// turns NOT_SERVING; then the names are cleared, which ends open `Watch`
/// streams (after they have seen NOT_SERVING) so they do not hold up a
/// graceful shutdown.
pub async fn health(shutdown: CancellationToken) -> (HealthReporter, HealthServer<HealthService>) {
    let reporter = HealthReporter::new();
    for name in HEALTH_SERVICES {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    let mut on_shutdown = reporter.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        for name in HEALTH_SERVICES {
            on_shutdown
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        for name in HEALTH_SERVICES {
            on_shutdown.clear_service_status(name).await;
        }
    });
    (reporter, server)
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Server reflection, v1 (`grpc.reflection.v1.ServerReflection`): lists
/// and describes Ridgeline's services, health checking and itself.
pub fn reflection_v1() -> tonic_reflection::server::v1::ServerReflectionServer<
    impl tonic_reflection::server::v1::ServerReflection,
> {
    // The descriptor sets are compiled in: they decode, or no test passes.
    reflection_builder()
        .build_v1()
        .expect("the compiled-in descriptor sets decode")
}

/// Server reflection, v1alpha (`grpc.reflection.v1alpha.ServerReflection`),
/// for older clients.
pub fn reflection_v1alpha() -> tonic_reflection::server::v1alpha::ServerReflectionServer<
    impl tonic_reflection::server::v1alpha::ServerReflection,
> {
    reflection_builder()
        .build_v1alpha()
        .expect("the compiled-in descriptor sets decode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;

    #[test]
    fn the_descriptor_sets_build_both_reflection_services() {
        let _ = reflection_v1();
        let _ = reflection_v1alpha();
    }

    #[tokio::test]
    async fn health_is_serving_until_shutdown_then_not_serving() {
        let shutdown = CancellationToken::new();
        let (reporter, _server) = health(shutdown.clone()).await;
        let service = HealthService::from_health_reporter(reporter);
        let check = |name: &str| {
            tonic::Request::new(HealthCheckRequest {
                service: name.to_string(),
            })
        };
        for name in HEALTH_SERVICES {
            let r = service.check(check(name)).await.unwrap().into_inner();
            assert_eq!(r.status, Wire::Serving as i32, "{name:?}");
        }
        let mut watch = service
            .watch(check(job_service_server::SERVICE_NAME))
            .await
            .unwrap()
            .into_inner();
        use tokio_stream::StreamExt;
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.status, Wire::Serving as i32);
        shutdown.cancel();
        let mut seen = Vec::new();
        while let Some(r) = watch.next().await {
            seen.push(r.unwrap().status);
        }
        // NOT_SERVING, then the stream ends (it must not hold up shutdown).
        assert_eq!(seen.last(), Some(&(Wire::NotServing as i32)));
    }
}
