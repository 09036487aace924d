//! Workflow templates: the built-in step-by-step plans an agent follows in a mode.
//!
//! They are compiled in and never change at run time, so they need no storage. Besides
//! upstream's five, `execute-recruit` is served: the default `recruiter` team member points to
//! it, and upstream answered 404 for it.

use maestro_protocol::{WorkflowPhase, WorkflowTemplate};

use super::Domain;
use crate::error::{Error, Result};

/// A template as written in the source.
struct Builtin {
    id: &'static str,
    name: &'static str,
    mode: &'static str,
    description: &'static str,
    /// `(name, instruction)` in the order the agent goes through them.
    phases: &'static [(&'static str, &'static str)],
}

impl Builtin {
    fn to_wire(&self) -> WorkflowTemplate {
        WorkflowTemplate {
            id: self.id.to_owned(),
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            mode: self.mode.to_owned(),
            phases: self
                .phases
                .iter()
                .map(|(name, instruction)| WorkflowPhase {
                    name: (*name).to_owned(),
                    instruction: (*instruction).to_owned(),
                })
                .collect(),
            built_in: true,
        }
    }
}

const FINISH_PARENT: &str = "When every subtask is verified, mark your task done with \
    `maestro task report complete` and end your session with `maestro report complete`, \
    giving a short summary of the outcome.";

const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "execute-simple",
        name: "Execute Simple",
        mode: "execute",
        description: "One worker takes its assigned task from start to finish on its own and \
            reports the result.",
        phases: &[
            (
                "execute",
                "Read your task with `maestro task get` and do the work it asks for in the \
                 project's working directory. Whenever you finish a meaningful step, post a \
                 one-line update with `maestro task report progress`.",
            ),
            (
                "report",
                "Write down what you changed, how you checked it and what is still open. Attach \
                 anything worth keeping with `maestro task docs add`; if you cannot go on, say \
                 why with `maestro task report blocked` instead of guessing.",
            ),
            (
                "complete",
                "Mark the task finished with `maestro task report complete`, then close your \
                 session with `maestro report complete`. Do not start unrelated work afterwards.",
            ),
        ],
    },
    Builtin {
        id: "execute-tree",
        name: "Execute Tree",
        mode: "execute",
        description: "One worker owns a task and all of its subtasks and works through the whole \
            tree itself, in dependency order.",
        phases: &[
            (
                "analyze",
                "Load your task with `maestro task get` and its subtasks with \
                 `maestro task children --recursive`. Before touching code, find out which \
                 subtasks need others to be finished first.",
            ),
            (
                "plan",
                "Choose an order in which every subtask comes after the ones it depends on. If \
                 some necessary work has no subtask yet, add one with `maestro task create`, \
                 giving your task as the parent, so progress stays visible.",
            ),
            (
                "execute",
                "Work through the subtasks in that order. Close each one with \
                 `maestro task report complete` for that subtask as soon as it is done, and use \
                 `maestro task report progress` to narrate longer steps.",
            ),
            (
                "report",
                "Check that the finished subtasks together meet the goal of the root task. Post \
                 a summary with `maestro task report progress` and attach notes or designs with \
                 `maestro task docs add`.",
            ),
            (
                "complete",
                "Mark the root task done with `maestro task report complete`, then end your \
                 session with `maestro report complete`.",
            ),
        ],
    },
    Builtin {
        id: "execute-recruit",
        name: "Execute Recruit",
        mode: "execute",
        description: "A recruiter works out which team members the project is missing and adds \
            them to the team.",
        phases: &[
            (
                "analyze",
                "Read your task with `maestro task get` and see who is already on the team with \
                 `maestro team-member list`. List the roles or skills the work needs that no \
                 current member covers.",
            ),
            (
                "recruit",
                "Add each missing member with `maestro team-member create`, giving a clear name, \
                 role, avatar and a one-sentence identity. Change an existing member with \
                 `maestro team-member edit` rather than creating a near-duplicate.",
            ),
            (
                "report",
                "Summarise who you added or changed and why with \
                 `maestro task report progress`. Tell whoever asked for the recruitment with \
                 `maestro mail send`.",
            ),
            (
                "complete",
                "Mark the task done with `maestro task report complete` and end your session \
                 with `maestro report complete`.",
            ),
        ],
    },
    Builtin {
        id: "coordinate-default",
        name: "Coordinate Default",
        mode: "coordinate",
        description: "A coordinator splits the work into subtasks, gives each to its own worker \
            session and checks what comes back; it does not write the code itself.",
        phases: &[
            (
                "analyze",
                "Read your task with `maestro task get` and any existing subtasks with \
                 `maestro task children`. Make sure you understand the goal and how success will \
                 be judged before splitting anything.",
            ),
            (
                "decompose",
                "Cut the work into subtasks that one worker can finish alone, each with a clear, \
                 checkable outcome, and create them with `maestro task create` under your task. \
                 Reuse subtasks that already exist.",
            ),
            (
                "spawn",
                "Start one worker per subtask with `maestro session spawn`, passing the \
                 subtask's id. Pick a team member whose role fits the work from \
                 `maestro team-member list`.",
            ),
            (
                "monitor",
                "Follow the workers with `maestro session list` and wait for their messages with \
                 `maestro mail wait`; answer questions with `maestro mail reply`. Keep the parent \
                 task's history current with `maestro task report progress`.",
            ),
            (
                "verify",
                "When a worker reports back, check its result against the subtask's outcome; \
                 `maestro task children` shows where each one stands. Send rework back with \
                 `maestro mail send`, or start a fresh worker with `maestro session spawn`.",
            ),
            ("complete", FINISH_PARENT),
        ],
    },
    Builtin {
        id: "coordinate-batching",
        name: "Coordinate Intelligent Batching",
        mode: "coordinate",
        description: "A coordinator groups subtasks that do not interfere with each other into \
            batches and runs each batch's workers in parallel, one batch after another.",
        phases: &[
            (
                "analyze",
                "Read your task and its subtasks with `maestro task get` and \
                 `maestro task children`. Note which pieces of work touch the same files or need \
                 each other's results.",
            ),
            (
                "decompose",
                "Create any missing subtasks with `maestro task create` under your task, then \
                 sort them into batches whose members are independent of one another. Work that \
                 needs another subtask's result goes into a later batch.",
            ),
            (
                "execute_batch",
                "For the current batch, start one worker per subtask with \
                 `maestro session spawn` and wait for their reports with `maestro mail wait`. \
                 Begin the next batch only once every subtask of this one is complete; repeat \
                 until no batch is left.",
            ),
            (
                "verify",
                "Check the combined result of all batches against the goal of your task, and \
                 start a follow-up worker with `maestro session spawn` for anything that fell \
                 short. Record what you checked with `maestro task report progress`.",
            ),
            ("complete", FINISH_PARENT),
        ],
    },
    Builtin {
        id: "coordinate-dag",
        name: "Coordinate DAG",
        mode: "coordinate",
        description: "A coordinator models the subtasks as a dependency graph and starts each one \
            as soon as everything it depends on is finished.",
        phases: &[
            (
                "analyze",
                "Read your task with `maestro task get` and its subtasks with \
                 `maestro task children --recursive`. Work out which results each piece of work \
                 needs from the others.",
            ),
            (
                "build_dag",
                "Create any missing subtasks with `maestro task create` under your task and \
                 record which subtasks each one depends on. Make sure there are no cycles; the \
                 subtasks with nothing left to wait for form the first wave.",
            ),
            (
                "execute_wave",
                "Spawn a worker with `maestro session spawn` for every subtask whose \
                 dependencies are all complete, then wait for reports with `maestro mail wait`. \
                 Each time one finishes, start whatever it unblocked, wave after wave, until the \
                 graph is done.",
            ),
            (
                "verify",
                "Confirm that every subtask in the graph is complete and that the results fit \
                 together to meet your task's goal. Send fixes back with `maestro mail send` or \
                 a new `maestro session spawn`.",
            ),
            ("complete", FINISH_PARENT),
        ],
    },
];

impl Domain {
    /// Every built-in template, or those of `mode` when it is `execute` or `coordinate`
    /// (any other value is ignored, as upstream).
    pub fn list_templates(&self, mode: Option<&str>) -> Vec<WorkflowTemplate> {
        let mode = mode.filter(|m| matches!(*m, "execute" | "coordinate"));
        BUILTINS
            .iter()
            .filter(|t| mode.is_none_or(|m| t.mode == m))
            .map(Builtin::to_wire)
            .collect()
    }

    /// One template by id (404 `Template with id '<id>' not found` otherwise).
    pub fn get_template(&self, id: &str) -> Result<WorkflowTemplate> {
        BUILTINS
            .iter()
            .find(|t| t.id == id)
            .map(Builtin::to_wire)
            .ok_or_else(|| Error::not_found("Template", id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_phases_present() {
        let ids: HashSet<_> = BUILTINS.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), BUILTINS.len());
        for t in BUILTINS {
            assert!(
                t.id.starts_with(t.mode),
                "{} is not named after its mode",
                t.id
            );
            assert!(!t.phases.is_empty(), "{}", t.id);
            assert_eq!(t.phases.last().map(|p| p.0), Some("complete"), "{}", t.id);
            for (name, instruction) in t.phases {
                assert!(instruction.contains("`maestro "), "{}/{name}", t.id);
            }
        }
    }

    #[test]
    fn upstream_phase_names_are_kept() {
        let phases = |id: &str| -> Vec<&str> {
            BUILTINS
                .iter()
                .find(|t| t.id == id)
                .unwrap()
                .phases
                .iter()
                .map(|p| p.0)
                .collect()
        };
        assert_eq!(phases("execute-simple"), ["execute", "report", "complete"]);
        assert_eq!(
            phases("execute-tree"),
            ["analyze", "plan", "execute", "report", "complete"]
        );
        assert_eq!(
            phases("coordinate-default"),
            [
                "analyze",
                "decompose",
                "spawn",
                "monitor",
                "verify",
                "complete"
            ]
        );
        assert_eq!(
            phases("coordinate-batching"),
            [
                "analyze",
                "decompose",
                "execute_batch",
                "verify",
                "complete"
            ]
        );
        assert_eq!(
            phases("coordinate-dag"),
            ["analyze", "build_dag", "execute_wave", "verify", "complete"]
        );
    }
}
