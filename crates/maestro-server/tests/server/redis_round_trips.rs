//! `maestro_redis_round_trips_total`: the Redis backend counts its round trips, and a task
//! creation costs the number `docs/performance.md` says (one: `MULTI`, `EVALSHA` of the commit
//! script, `EXEC`, sent at once). Runs on its own `redis-server` whatever the suite's backend.

use crate::common;

use common::TestServer;
use common::redis::RedisServer;
use maestro_protocol::{CreateProject, CreateTask};

/// Round trips of one `POST /api/tasks` on Redis.
const CREATE_ROUND_TRIPS: u64 = 1;

/// Tries per measurement: background work (the push flush loop's once-a-second read) can land
/// between two readings of the counter and only ever adds to it, so the smallest difference
/// seen is the request's own.
const TRIES: usize = 5;

async fn round_trips(server: &TestServer) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("maestro_redis_round_trips_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no maestro_redis_round_trips_total in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_task_is_one_round_trip_to_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = TestServer::start_with(|c| {
        c.redis_url = Some(url);
        // No liveness sweep during the test: it reads Redis four times a sweep.
        c.sweep_interval_ms = 3_600_000;
    })
    .await;
    let api = server.api();
    // The first commit loads the commit script (NOSCRIPT, SCRIPT LOAD, again): done here.
    let project = api
        .create_project(&CreateProject {
            name: Some("round trips".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut fewest = u64::MAX;
    for i in 0..TRIES {
        let before = round_trips(&server).await;
        api.create_task(&CreateTask {
            project_id: Some(project.id.clone()),
            title: Some(format!("task {i}")),
            ..Default::default()
        })
        .await
        .unwrap();
        let after = round_trips(&server).await;
        assert!(
            after > before,
            "the create reached Redis without being counted"
        );
        fewest = fewest.min(after - before);
    }
    assert_eq!(
        fewest, CREATE_ROUND_TRIPS,
        "round trips of one task creation on Redis"
    );
}
