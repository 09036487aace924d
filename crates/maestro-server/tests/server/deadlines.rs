//! Deadline indexes (issue 15): the sweeps read what is due, not every record; presence, lease
//! and idempotency records go with their session, task or project; records stored without a
//! deadline (an older server's) are indexed when a sweeper starts. On the suite's backend
//! (`MAESTRO_TEST_BACKEND=redis` for Redis).

use crate::common;

use maestro_protocol::{
    ClaimRequest, CreateProject, CreateSession, CreateTask, Heartbeat, Presence, Session,
};
use maestro_server::domain::Domain;
use maestro_server::error::Error;
use maestro_server::ports::{Collection, Deadline, ReaderExt, TxnExt, transact};
use serde_json::{Value, json};

fn open_domain() -> (tempfile::TempDir, Domain) {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_for(dir.path()).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost".into()).unwrap();
    (dir, domain)
}

async fn project(d: &Domain) -> String {
    d.create_project(CreateProject {
        name: Some("deadlines".into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

async fn session(d: &Domain, project: &str) -> String {
    d.create_session(CreateSession {
        project_id: Some(project.into()),
        task_ids: Some(vec![]),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_set_replaced_cleared_and_read_earliest_first() {
    let (_dir, d) = open_domain();
    let store = d.store.clone();
    transact(&*store, |tx| {
        tx.schedule(Deadline::ClaimExpiry, "a", Some(30));
        tx.schedule(Deadline::ClaimExpiry, "b", Some(10));
        tx.schedule(Deadline::ClaimExpiry, "c", Some(20));
        // Another index is another key space.
        tx.schedule(Deadline::Idempotency, "a", Some(1));
        Ok(())
    })
    .await
    .unwrap();
    let due = |now, limit| store.due(Deadline::ClaimExpiry, now, limit).unwrap();
    assert_eq!(due(25, 10), ["b", "c"]);
    assert_eq!(due(9, 10), Vec::<String>::new());
    assert_eq!(due(100, 2), ["b", "c"]);
    transact(&*store, |tx| {
        tx.schedule(Deadline::ClaimExpiry, "a", Some(5)); // moved earlier
        tx.schedule(Deadline::ClaimExpiry, "c", None); // cleared
        tx.schedule(Deadline::ClaimExpiry, "b", Some(40));
        tx.schedule(Deadline::ClaimExpiry, "b", Some(15)); // the last call wins
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(due(100, 10), ["a", "b"]);
    assert_eq!(
        store.due(Deadline::Idempotency, 100, 10).unwrap(),
        ["a"],
        "untouched"
    );
    // A transaction that fails sets nothing.
    let err = transact(&*store, |tx| {
        tx.schedule(Deadline::ClaimExpiry, "z", Some(1));
        tx.put(Collection::Tasks, "t", Some("p"), &json!({}));
        Err::<(), _>(Error::Conflict("no".into()))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)));
    assert_eq!(due(100, 10), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beat_schedules_the_sweep_and_only_silent_sessions_come_due() {
    let (_dir, d) = open_domain();
    let p = project(&d).await;
    let quiet = session(&d, &p).await;
    let beating = session(&d, &p).await;
    for s in [&quiet, &beating] {
        d.heartbeat(s.clone(), Heartbeat { progress: None })
            .await
            .unwrap();
    }
    let cfg = d.info.liveness;
    let now = maestro_server::util::now_ms();
    // Nothing is due before the TTL.
    assert!(
        d.store
            .due(Deadline::PresenceExpiry, now, 100)
            .unwrap()
            .is_empty()
    );
    // Later, only the two silent sessions; the one that beats again moves out of reach.
    let later = now + (cfg.ttl_ms + cfg.grace_ms) as i64 + 20;
    assert_eq!(
        d.store
            .due(Deadline::PresenceExpiry, later, 100)
            .unwrap()
            .len(),
        2
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    d.heartbeat(beating.clone(), Heartbeat { progress: None })
        .await
        .unwrap();
    let due_now = d.store.due(Deadline::PresenceExpiry, later, 100).unwrap();
    assert_eq!(
        due_now,
        std::slice::from_ref(&quiet),
        "the beat moved the other one past"
    );

    // The sweep fails the silent one and its deadline goes; the beating one is untouched.
    d.sweep_once(later, 0).await.unwrap();
    let s: Session = d
        .reader()
        .unwrap()
        .get(Collection::Sessions, &quiet)
        .unwrap()
        .unwrap();
    assert_eq!(s.status, "failed");
    assert!(
        d.store
            .due(Deadline::PresenceExpiry, later, 100)
            .unwrap()
            .is_empty()
    );
    let b: Session = d
        .reader()
        .unwrap()
        .get(Collection::Sessions, &beating)
        .unwrap()
        .unwrap();
    assert_ne!(b.status, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_with_their_session_task_and_project() {
    let (_dir, d) = open_domain();
    let p = project(&d).await;
    let s = session(&d, &p).await;
    d.heartbeat(s.clone(), Heartbeat { progress: None })
        .await
        .unwrap();
    let t = d
        .create_task(CreateTask {
            project_id: Some(p.clone()),
            title: Some("leased".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    d.claim_task(
        t.clone(),
        ClaimRequest {
            session_id: Some(s.clone()),
            ttl_ms: Some(60_000),
        },
    )
    .await
    .unwrap();
    let far = maestro_server::util::now_ms() + 10_000_000;
    assert_eq!(
        d.store.due(Deadline::ClaimExpiry, far, 10).unwrap(),
        std::slice::from_ref(&t)
    );

    d.delete_task(t.clone()).await.unwrap();
    assert!(
        d.reader()
            .unwrap()
            .get::<Value>(Collection::Claims, &t)
            .unwrap()
            .is_none()
    );
    assert!(
        d.store
            .due(Deadline::ClaimExpiry, far, 10)
            .unwrap()
            .is_empty()
    );

    d.delete_session(s.clone()).await.unwrap();
    assert!(
        d.reader()
            .unwrap()
            .get::<Presence>(Collection::Presence, &s)
            .unwrap()
            .is_none()
    );
    for index in [Deadline::PresenceExpiry, Deadline::PresenceStall] {
        assert!(d.store.due(index, far, 10).unwrap().is_empty(), "{index:?}");
    }

    // An answer remembered for a spawn key of the project goes with the project.
    transact(&*d.store, {
        let p = p.clone();
        move |tx| {
            tx.put(
                Collection::Idempotency,
                "spawn:k1",
                Some(&p),
                &json!({ "answer": 1 }),
            );
            tx.schedule(Deadline::Idempotency, "spawn:k1", Some(1));
            Ok(())
        }
    })
    .await
    .unwrap();
    d.delete_project(p).await.unwrap();
    assert!(
        d.reader()
            .unwrap()
            .get::<Value>(Collection::Idempotency, "spawn:k1")
            .unwrap()
            .is_none()
    );
    assert!(
        d.store
            .due(Deadline::Idempotency, far, 10)
            .unwrap()
            .is_empty()
    );
}

/// Presence records written without deadlines (by a server older than the indexes) are
/// indexed when a sweeper starts, so a silent agent among them is still noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_deadlines_are_indexed_at_start() {
    let (_dir, d) = open_domain();
    let p = project(&d).await;
    let s = session(&d, &p).await;
    let then = maestro_server::util::now_ms() - 3_600_000;
    transact(&*d.store, {
        let (p, s) = (p.clone(), s.clone());
        move |tx| {
            let presence = Presence {
                session_id: s.clone(),
                project_id: p.clone(),
                online: true,
                last_seen: then,
                last_progress: then,
                stalled: false,
                ttl_ms: 1_000,
            };
            tx.put(Collection::Presence, &s, Some(&p), &presence);
            Ok(())
        }
    })
    .await
    .unwrap();
    let now = maestro_server::util::now_ms();
    assert!(
        d.store
            .due(Deadline::PresenceExpiry, now, 10)
            .unwrap()
            .is_empty()
    );
    d.sweep_once(now, 0).await.unwrap();
    let still: Session = d
        .reader()
        .unwrap()
        .get(Collection::Sessions, &s)
        .unwrap()
        .unwrap();
    assert_ne!(
        still.status, "failed",
        "not indexed: the sweep cannot see it"
    );

    d.reindex(0).await.unwrap();
    d.sweep_once(now, 0).await.unwrap();
    let failed: Session = d
        .reader()
        .unwrap()
        .get(Collection::Sessions, &s)
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, "failed");
}
