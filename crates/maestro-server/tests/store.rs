//! The store port itself, on the suite's backend (local, or Redis with
//! `MAESTRO_TEST_BACKEND=redis`): what transactions promise beyond any one API route.

mod common;

use maestro_server::error::Error;
use maestro_server::ports::{Collection, ReaderExt, TxnExt, transact};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_of_an_existing_id_fails_whole_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_for(dir.path()).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost".into()).unwrap();
    let store = domain.store.clone();

    transact(&*store, |tx| {
        tx.insert(
            Collection::Tasks,
            "t1",
            Some("p"),
            &json!({ "id": "t1", "v": 1 }),
        );
        tx.emit("p", "task:created", &json!({ "id": "t1" }), None);
        Ok(())
    })
    .await
    .unwrap();
    let head = domain.reader().unwrap().head_seq("p").unwrap();

    // The same id again, together with other writes and an event: nothing of it lands.
    let err = transact(&*store, |tx| {
        tx.put(Collection::Tasks, "t2", Some("p"), &json!({ "id": "t2" }));
        tx.insert(
            Collection::Tasks,
            "t1",
            Some("p"),
            &json!({ "id": "t1", "v": 2 }),
        );
        tx.emit("p", "task:created", &json!({ "id": "t1" }), None);
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    let mut r = domain.reader().unwrap();
    let t1: Value = r.get(Collection::Tasks, "t1").unwrap().unwrap();
    assert_eq!(t1["v"], 1, "the first insert stands");
    assert!(r.get::<Value>(Collection::Tasks, "t2").unwrap().is_none());
    assert_eq!(
        r.head_seq("p").unwrap(),
        head,
        "no event of the failed commit"
    );
    let listed: Vec<Value> = r.list(Collection::Tasks, Some("p")).unwrap();
    assert_eq!(listed.len(), 1);

    // Inserted and read back in one transaction: the overlay has it.
    transact(&*store, |tx| {
        tx.insert(Collection::Tasks, "t3", Some("p"), &json!({ "id": "t3" }));
        assert!(tx.get::<Value>(Collection::Tasks, "t3")?.is_some());
        assert_eq!(tx.list::<Value>(Collection::Tasks, Some("p"))?.len(), 2);
        Ok(())
    })
    .await
    .unwrap();
    drop(r);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_entity_that_is_missing_fails_the_commit_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_for(dir.path()).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost".into()).unwrap();
    let store = domain.store.clone();
    transact(&*store, |tx| {
        tx.put(Collection::Projects, "p", None, &json!({ "id": "p" }));
        Ok(())
    })
    .await
    .unwrap();

    let err = transact(&*store, |tx| {
        tx.require(Collection::Projects, "p", "Project");
        tx.require(Collection::Projects, "gone", "Project");
        tx.insert(
            Collection::Tasks,
            "t1",
            Some("gone"),
            &json!({ "id": "t1" }),
        );
        tx.emit("gone", "task:created", &json!({ "id": "t1" }), None);
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        Error::not_found("Project", "gone").to_string()
    );
    let mut r = domain.reader().unwrap();
    assert!(r.get::<Value>(Collection::Tasks, "t1").unwrap().is_none());
    assert_eq!(r.head_seq("gone").unwrap(), 0);

    transact(&*store, |tx| {
        tx.require(Collection::Projects, "p", "Project");
        tx.insert(Collection::Tasks, "t1", Some("p"), &json!({ "id": "t1" }));
        Ok(())
    })
    .await
    .unwrap();
    let mut r = domain.reader().unwrap();
    assert!(r.get::<Value>(Collection::Tasks, "t1").unwrap().is_some());
    // A transaction that only requires still checks.
    let err = transact(&*store, |tx| {
        tx.require(Collection::Tasks, "nope", "Task");
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        Error::not_found("Task", "nope").to_string()
    );
    drop(r);
    store.close().await;
}
