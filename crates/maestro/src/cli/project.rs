//! `maestro project list|create|get|delete`.

use clap::Subcommand;
use maestro_protocol::{CreateProject, Project};
use serde_json::json;

use super::context::Context;
use super::output::{CliError, CmdResult, emit, kv, table};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List all projects.
    List,
    /// Create a project.
    Create {
        /// The project's name.
        name: String,
        /// Working directory of the project's agents [default: the current directory].
        #[arg(short = 'd', long = "dir", value_name = "DIR")]
        dir: Option<String>,
        /// Description.
        #[arg(long = "desc", value_name = "TEXT")]
        desc: Option<String>,
    },
    /// Show a project.
    Get {
        /// Project id.
        id: String,
    },
    /// Delete a project (refused while it has tasks or sessions).
    Delete {
        /// Project id.
        id: String,
    },
}

pub async fn run(ctx: &Context, cmd: ProjectCommand) -> CmdResult {
    let client = ctx.client()?;
    match cmd {
        ProjectCommand::List => {
            let projects = client.list_projects().await.map_err(|e| ctx.err(e))?;
            emit(ctx.json, &projects, || {
                if projects.is_empty() {
                    say!("No projects found.");
                    return;
                }
                let rows: Vec<_> = projects
                    .iter()
                    .map(|p| vec![p.id.clone(), p.name.clone(), p.working_dir.clone()])
                    .collect();
                table(&["ID", "Name", "Working Dir"], &rows);
            });
        }
        ProjectCommand::Create { name, dir, desc } => {
            if name.trim().is_empty() {
                return Err(CliError::usage("The project name must not be empty."));
            }
            let dir = match dir {
                Some(d) => d,
                None => std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            };
            let req = CreateProject {
                name: Some(name),
                working_dir: Some(dir),
                description: desc,
                machine_id: None,
            };
            let p = client.create_project(&req).await.map_err(|e| ctx.err(e))?;
            emit(ctx.json, &p, || show(&p));
        }
        ProjectCommand::Get { id } => {
            let p = client.get_project(&id).await.map_err(|e| ctx.err(e))?;
            emit(ctx.json, &p, || show(&p));
        }
        ProjectCommand::Delete { id } => {
            client.delete_project(&id).await.map_err(|e| ctx.err(e))?;
            emit(ctx.json, &json!({ "deleted": id }), || {
                say!("Project {id} deleted.");
            });
        }
    }
    Ok(())
}

fn show(p: &Project) {
    kv("ID", &p.id);
    kv("Name", &p.name);
    kv("Dir", &p.working_dir);
    if !p.description.is_empty() {
        kv("Description", &p.description);
    }
}
