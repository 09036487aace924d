//! The few REST calls the benchmarks need to set up their data, over one pooled HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            http,
            base: base.to_owned(),
        })
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn create_project(&self, name: &str) -> Result<String> {
        id_of(self.post("/api/projects", &json!({ "name": name })).await?)
    }

    pub async fn create_task(&self, project: &str, title: &str) -> Result<String> {
        id_of(
            self.post(
                "/api/tasks",
                &json!({ "projectId": project, "title": title }),
            )
            .await?,
        )
    }

    /// A session of `project` with the given status and no tasks.
    pub async fn create_session(&self, project: &str, status: &str) -> Result<String> {
        id_of(
            self.post(
                "/api/sessions",
                &json!({ "projectId": project, "taskIds": [], "name": "bench", "status": status }),
            )
            .await?,
        )
    }

    /// Creates `n` tasks in `project`, 50 requests in flight.
    pub async fn create_tasks(&self, project: &str, n: usize) -> Result<()> {
        self.times(project, n, |api, project| async move {
            api.create_task(&project, "bench task").await?;
            Ok(())
        })
        .await
    }

    /// Creates `n` sessions in `project` and beats each once, 50 requests in flight.
    pub async fn create_beating_sessions(&self, project: &str, n: usize) -> Result<()> {
        self.times(project, n, |api, project| async move {
            let s = api.create_session(&project, "working").await?;
            api.post(&format!("/api/sessions/{s}/heartbeat"), &json!({}))
                .await?;
            Ok(())
        })
        .await
    }

    /// Runs `step` `n` times for `project`, 50 at a time; the first error ends it.
    async fn times<F, Fut>(&self, project: &str, n: usize, step: F) -> Result<()>
    where
        F: Fn(Api, String) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let left = Arc::new(AtomicUsize::new(n));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..50.min(n) {
            let (api, left, project, step) =
                (self.clone(), left.clone(), project.to_owned(), step.clone());
            workers.spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    step(api.clone(), project.clone()).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        Ok(())
    }

    /// The number of tasks `GET /api/tasks?projectId=` returns.
    pub async fn count_tasks(&self, project: &str) -> Result<usize> {
        let tasks = self.get(&format!("/api/tasks?projectId={project}")).await?;
        Ok(tasks.as_array().context("a task list")?.len())
    }
}

fn id_of(v: Value) -> Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id in {v}"))
}
