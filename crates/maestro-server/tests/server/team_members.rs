//! Team members: the five built-ins, custom members, overrides, archive/unarchive/delete/reset.

use crate::common;

use common::{TestServer, api_err};
use maestro_protocol::{CreateProject, CreateTeamMember, UpdateTeamMember};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_custom_and_lifecycle() {
    let server = TestServer::start().await;
    let c = server.api();
    let p = c
        .create_project(&CreateProject {
            name: Some("team".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let mut ws = server.ws().await;

    let list = c.list_team_members(&p).await.unwrap();
    let ids: Vec<_> = list.iter().map(|m| m.id.clone()).collect();
    let kinds = [
        "simple_worker",
        "coordinator",
        "batch_coordinator",
        "dag_coordinator",
        "recruiter",
    ];
    assert_eq!(ids, kinds.map(|k| format!("tm_{p}_{k}")));
    assert!(
        list.iter()
            .all(|m| m.is_default && m.status == "active" && !m.identity.is_empty())
    );
    assert_eq!(
        list[4].workflow_template_id.as_deref(),
        Some("execute-recruit")
    );
    assert!(list[0].created_at.ends_with('Z'));
    // Stable across reads (upstream reported "now").
    assert_eq!(c.list_team_members(&p).await.unwrap(), list);

    // Custom member.
    let m = c
        .create_team_member(&CreateTeamMember {
            project_id: Some(p.clone()),
            name: Some(" Rusty ".into()),
            role: Some("Porter".into()),
            avatar: Some("R".into()),
            mode: Some("execute".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(m.name, "Rusty");
    assert!(!m.is_default);
    ws.expect_events(&["team_member:created"]).await;
    assert_eq!(c.get_team_member(&m.id, &p).await.unwrap(), m);
    assert_eq!(c.list_team_members(&p).await.unwrap().len(), 6);

    // Delete needs archive first; archive and unarchive work.
    api_err(
        c.delete_team_member(&m.id, &p).await,
        422,
        "BUSINESS_RULE_ERROR",
    );
    let a = c.team_member_action(&m.id, "archive", &p).await.unwrap();
    assert_eq!(a.status, "archived");
    let again = c.team_member_action(&m.id, "archive", &p).await.unwrap();
    assert_eq!(again, a, "already archived: unchanged");
    let u = c.team_member_action(&m.id, "unarchive", &p).await.unwrap();
    assert_eq!(u.status, "active");
    c.team_member_action(&m.id, "archive", &p).await.unwrap();
    ws.expect_events(&[
        "team_member:archived",
        "team_member:updated",
        "team_member:archived",
    ])
    .await;
    c.delete_team_member(&m.id, &p).await.unwrap();
    ws.expect_events(&["team_member:deleted"]).await;
    api_err(c.get_team_member(&m.id, &p).await, 404, "NOT_FOUND");

    // Built-ins: edit (override), reset, and what they refuse.
    let worker = format!("tm_{p}_simple_worker");
    let edited = c
        .update_team_member(
            &worker,
            &UpdateTeamMember {
                project_id: Some(p.clone()),
                model: Some("opus".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.model.as_deref(), Some("opus"));
    assert!(edited.is_default);
    assert_eq!(
        c.get_team_member(&worker, &p)
            .await
            .unwrap()
            .model
            .as_deref(),
        Some("opus")
    );
    ws.expect_events(&["team_member:updated"]).await;
    api_err(
        c.team_member_action(&worker, "archive", &p).await,
        403,
        "FORBIDDEN",
    );
    api_err(c.delete_team_member(&worker, &p).await, 403, "FORBIDDEN");
    let reset = c.team_member_action(&worker, "reset", &p).await.unwrap();
    assert_eq!(reset.model.as_deref(), Some("sonnet"));
    assert_eq!(reset, list[0]);

    // Errors.
    let custom = c
        .create_team_member(&CreateTeamMember {
            project_id: Some(p.clone()),
            name: Some("B".into()),
            role: Some("r".into()),
            avatar: Some("b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    api_err(
        c.team_member_action(&custom.id, "reset", &p).await,
        404,
        "NOT_FOUND",
    );
    api_err(
        c.create_team_member(&CreateTeamMember {
            project_id: Some(p.clone()),
            name: Some("  ".into()),
            role: Some("r".into()),
            avatar: Some("b".into()),
            ..Default::default()
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        c.update_team_member(
            &custom.id,
            &UpdateTeamMember {
                project_id: Some(p.clone()),
                agent_tool: Some("emacs".into()),
                ..Default::default()
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(c.list_team_members("proj_nope").await, 404, "NOT_FOUND");
    let missing = server
        .raw("GET", "/api/team-members", None, Vec::new())
        .await;
    assert_eq!(missing.status, 400);
    api_err(
        c.get_team_member("tm_../x", &p).await,
        400,
        "VALIDATION_ERROR",
    );
}
