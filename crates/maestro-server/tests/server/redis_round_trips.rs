//! `maestro_redis_round_trips_total`: the Redis backend counts its round trips, and a task
//! creation, a message sent and a mailbox read cost the numbers `docs/performance.md` says.
//! Runs on its own `redis-server` whatever the suite's backend.

use crate::common;

use common::TestServer;
use common::redis::RedisServer;
use maestro_protocol::{CreateProject, CreateTask, SendMail};

/// Round trips of one `POST /api/tasks` on Redis: `MULTI`, `EVALSHA` of the commit script,
/// `EXEC`, sent at once. The project only has to exist, which the script checks.
const CREATE_ROUND_TRIPS: u64 = 1;

/// Round trips of one `POST /api/mail` to a session: the recipient (`WATCH` + `GET`), the
/// project's newest message (a page of the index, then its values, watched), the project's
/// mail counter, and the commit. The project's existence is checked by the commit script.
const SEND_ROUND_TRIPS: u64 = 5;

/// Round trips of `GET /api/mail/inbox/:id?projectId=&since=` over 20 messages, all within the
/// `since` margin: the newest-first walk reads pages of 4, 8 and 16 ids, each page and its
/// values in one round trip (the `PAGE` script); the third page is short, so the walk ends.
const SINCE_READ_ROUND_TRIPS: u64 = 3;

/// Round trips of a `POST /api/mail` refused because the recipient is not a session of the
/// project: the recipient, then the project (to tell which of the two is missing), in a
/// transaction that fails; its `UNWATCH` goes out with the connection's next request rather
/// than as a round trip of its own.
const REFUSED_SEND_ROUND_TRIPS: u64 = 2;

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

/// A server on its own `redis-server`, with no liveness sweep (it reads Redis four times a
/// sweep).
async fn server_on_redis(dir: &std::path::Path) -> (std::sync::Arc<RedisServer>, TestServer) {
    let redis = RedisServer::start(&dir.join("redis"));
    let url = redis.url();
    let server = TestServer::start_with(|c| {
        c.redis_url = Some(url);
        c.sweep_interval_ms = 3_600_000;
    })
    .await;
    (redis, server)
}

/// The fewest round trips `op` made in [`TRIES`] runs; each must make at least one.
async fn fewest_round_trips<F: std::future::Future<Output = ()>>(
    server: &TestServer,
    what: &str,
    mut op: impl FnMut(usize) -> F,
) -> u64 {
    let mut fewest = u64::MAX;
    for i in 0..TRIES {
        let before = round_trips(server).await;
        op(i).await;
        let after = round_trips(server).await;
        assert!(after > before, "{what} reached Redis without being counted");
        fewest = fewest.min(after - before);
    }
    fewest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_task_is_one_round_trip_to_redis() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, server) = server_on_redis(dir.path()).await;
    let api = server.api();
    // The first commit loads the commit script (NOSCRIPT, SCRIPT LOAD, again): done here.
    let project = api
        .create_project(&CreateProject {
            name: Some("round trips".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let fewest = fewest_round_trips(&server, "the create", |i| {
        let (api, project) = (api.clone(), project.id.clone());
        async move {
            api.create_task(&CreateTask {
                project_id: Some(project),
                title: Some(format!("task {i}")),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await;
    assert_eq!(
        fewest, CREATE_ROUND_TRIPS,
        "round trips of one task creation on Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_costs_the_round_trips_the_docs_say() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, server) = server_on_redis(dir.path()).await;
    let api = server.api();
    let project = api
        .create_project(&CreateProject {
            name: Some("mail round trips".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let other = api
        .create_project(&CreateProject {
            name: Some("another project".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let mut sessions = Vec::new();
    for (name, project) in [("from", &project), ("to", &project), ("idle", &other)] {
        sessions.push(common::named_session(api, project, name).await);
    }
    let (from, to, idle) = (&sessions[0], &sessions[1], &sessions[2]);
    let message = |i: usize| SendMail {
        project_id: project.clone(),
        from_session_id: from.clone(),
        to_session_id: Some(to.clone()),
        kind: "directive".into(),
        subject: format!("message {i}"),
        ..Default::default()
    };
    // The first send loads the commit script.
    api.send_mail(&message(100)).await.unwrap();

    let send = fewest_round_trips(&server, "the send", |i| {
        let (api, m) = (api.clone(), message(i));
        async move {
            api.send_mail(&m).await.unwrap();
        }
    })
    .await;
    assert_eq!(send, SEND_ROUND_TRIPS, "round trips of one send on Redis");

    // 20 messages in all.
    for i in TRIES..19 {
        api.send_mail(&message(i)).await.unwrap();
    }
    let since = "1".to_owned();
    let read = fewest_round_trips(&server, "the since read", |_| {
        let (api, project, to, since) = (api.clone(), project.clone(), to.clone(), since.clone());
        async move {
            let got = api
                .inbox(&to, &[("projectId", &project), ("since", &since)])
                .await
                .unwrap();
            assert_eq!(got.len(), 20, "every message is after `since`");
        }
    })
    .await;
    assert_eq!(
        read, SINCE_READ_ROUND_TRIPS,
        "round trips of a since read of 20 messages on Redis"
    );

    // `idle` belongs to another project.
    let refused = fewest_round_trips(&server, "the refused send", |i| {
        let (api, mut m) = (api.clone(), message(i));
        m.to_session_id = Some(idle.clone());
        async move {
            let e = api.send_mail(&m).await.unwrap_err();
            assert!(e.to_string().contains("404"), "{e}");
        }
    })
    .await;
    assert_eq!(
        refused, REFUSED_SEND_ROUND_TRIPS,
        "round trips of a refused send on Redis"
    );
}
