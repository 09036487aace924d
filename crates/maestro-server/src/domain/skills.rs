//! Skills: instructions for agents that the user keeps on disk, one directory per skill.
//!
//! A skill is a directory under `SKILLS_DIR` whose name does not start with `.` and which
//! holds a `SKILL.md` that opens with a YAML front-matter block (`---` … `---`); the Markdown
//! after the block is the skill's content. Its directory name is its id, so a directory whose
//! name is not a valid id (see [`check_id`]) is not served.
//!
//! Skills are read from disk on every request, with no cache: an edited skill is visible at
//! once, and "reload" only re-reads it. Ids from requests are validated before any path is
//! built from them, so a request cannot read outside `SKILLS_DIR`.
//!
//! The front-matter parser ([`parse_skill`]) is pure; the rest is file access through
//! `tokio::fs`, which keeps blocking I/O off the runtime's worker threads.

use std::io::ErrorKind;
use std::path::Path;

use maestro_protocol::ids::is_valid_id;
use maestro_protocol::{Skill, SkillDetail, SkillReloaded, SkillSummary};
use yaml_rust2::{Yaml, YamlLoader};

use super::{Domain, check_enum, check_id};
use crate::error::{Error, Result};

/// The file that makes a directory a skill.
pub const SKILL_FILE: &str = "SKILL.md";

/// The `role` that makes a skill a coordinate-mode (`type: mode`) skill.
pub const ORCHESTRATOR_ROLE: &str = "orchestrator";

/// Version reported when the front matter has none.
pub const DEFAULT_VERSION: &str = "1.0.0";

/// Why a `SKILL.md` could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontMatterError {
    #[error("SKILL.md does not start with a '---' front-matter line")]
    Missing,
    #[error("the front-matter block has no closing '---' line")]
    Unterminated,
    #[error("the front matter is not valid YAML: {0}")]
    Yaml(String),
    #[error("the front matter is not a YAML mapping")]
    NotAMapping,
    #[error("the front matter has no '{0}'")]
    MissingField(&'static str),
    #[error("front-matter key '{0}' has the wrong type")]
    WrongType(&'static str),
}

/// Splits `text` into its front-matter YAML and the body after the closing `---`.
fn split_front_matter(text: &str) -> Result<(&str, &str), FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().ok_or(FrontMatterError::Missing)?;
    if first.trim_end() != "---" {
        return Err(FrontMatterError::Missing);
    }
    let start = first.len();
    let mut pos = start;
    for line in lines {
        if line.trim_end() == "---" {
            return Ok((&text[start..pos], &text[pos + line.len()..]));
        }
        pos += line.len();
    }
    Err(FrontMatterError::Unterminated)
}

/// A scalar front-matter value as a string (`version: 1.0` is a YAML number).
fn scalar(doc: &Yaml, key: &'static str) -> Result<Option<String>, FrontMatterError> {
    match &doc[key] {
        Yaml::BadValue | Yaml::Null => Ok(None),
        Yaml::String(s) | Yaml::Real(s) => Ok(Some(s.clone())),
        Yaml::Integer(i) => Ok(Some(i.to_string())),
        Yaml::Boolean(b) => Ok(Some(b.to_string())),
        Yaml::Array(_) | Yaml::Hash(_) | Yaml::Alias(_) => Err(FrontMatterError::WrongType(key)),
    }
}

/// A list of strings; a single scalar counts as a one-item list.
fn list(doc: &Yaml, key: &'static str) -> Result<Option<Vec<String>>, FrontMatterError> {
    match &doc[key] {
        Yaml::Array(items) => items
            .iter()
            .map(|item| match item {
                Yaml::String(s) | Yaml::Real(s) => Ok(s.clone()),
                Yaml::Integer(i) => Ok(i.to_string()),
                Yaml::Boolean(b) => Ok(b.to_string()),
                _ => Err(FrontMatterError::WrongType(key)),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Ok(scalar(doc, key)?.map(|s| vec![s])),
    }
}

/// Parses the text of `<id>/SKILL.md`. `name` and `description` are required; `version`
/// defaults to [`DEFAULT_VERSION`]; unknown keys are ignored.
pub fn parse_skill(id: &str, text: &str) -> Result<Skill, FrontMatterError> {
    let (yaml, body) = split_front_matter(text)?;
    let docs =
        YamlLoader::load_from_str(yaml).map_err(|e| FrontMatterError::Yaml(e.to_string()))?;
    let doc = match docs.into_iter().next() {
        Some(doc @ Yaml::Hash(_)) => doc,
        _ => return Err(FrontMatterError::NotAMapping),
    };
    let name = scalar(&doc, "name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or(FrontMatterError::MissingField("name"))?;
    let description =
        scalar(&doc, "description")?.ok_or(FrontMatterError::MissingField("description"))?;
    Ok(Skill {
        id: id.to_owned(),
        name,
        description,
        version: scalar(&doc, "version")?.unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
        triggers: list(&doc, "triggers")?,
        role: scalar(&doc, "role")?,
        scope: scalar(&doc, "scope")?,
        output_format: scalar(&doc, "output-format")?,
        language: scalar(&doc, "language")?,
        framework: scalar(&doc, "framework")?,
        tags: list(&doc, "tags")?,
        category: scalar(&doc, "category")?,
        license: scalar(&doc, "license")?,
        content: body.trim_start_matches(['\r', '\n']).trim_end().to_owned(),
        has_references: false,
        reference_count: 0,
    })
}

/// A skill's identity; `type` is `mode` for orchestrator skills and `custom` otherwise.
pub fn summary(skill: &Skill) -> SkillSummary {
    let kind = if skill.role.as_deref() == Some(ORCHESTRATOR_ROLE) {
        "mode"
    } else {
        "custom"
    };
    SkillSummary {
        id: skill.id.clone(),
        name: skill.name.clone(),
        description: skill.description.clone(),
        kind: kind.to_owned(),
        version: skill.version.clone(),
    }
}

/// What is at `<dir>/<id>/SKILL.md`.
enum Loaded {
    Skill(Box<Skill>),
    /// No such skill (no directory, not a directory, or no `SKILL.md`).
    Absent,
    /// A `SKILL.md` that cannot be understood.
    Broken(String),
}

/// Reads one skill; `id` must already be a valid id. An `Err` is an unexpected I/O failure.
async fn load(dir: &Path, id: &str) -> std::io::Result<Loaded> {
    let path = dir.join(id).join(SKILL_FILE);
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => Ok(match parse_skill(id, &text) {
            Ok(skill) => Loaded::Skill(Box::new(skill)),
            Err(e) => Loaded::Broken(e.to_string()),
        }),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            Ok(Loaded::Absent)
        }
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            Ok(Loaded::Broken("SKILL.md is not UTF-8".into()))
        }
        Err(e) => Err(e),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

impl Domain {
    /// Every readable skill, sorted by id. A missing `SKILLS_DIR` means no skills; a skill
    /// that cannot be read or parsed is skipped with a warning.
    pub async fn list_skills(&self) -> Result<Vec<Skill>> {
        let dir = &self.info.skills_dir;
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("cannot list skills in", dir, e)),
        };
        let mut skills = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error("cannot list skills in", dir, e))?
        {
            let name = entry.file_name();
            let id = name.to_str().unwrap_or_default();
            if id.starts_with('.') {
                continue;
            }
            if !is_valid_id(id) {
                // Stray files (a README) are expected here; only a would-be skill is worth a warning.
                let skill_file = entry.path().join(SKILL_FILE);
                if tokio::fs::try_exists(&skill_file).await.unwrap_or(false) {
                    tracing::warn!(dir = ?name, "skipping skill: directory name is not a valid id");
                }
                continue;
            }
            match load(dir, id).await {
                Ok(Loaded::Skill(skill)) => skills.push(*skill),
                Ok(Loaded::Absent) => {}
                Ok(Loaded::Broken(reason)) => {
                    tracing::warn!(skill = id, %reason, "skipping skill with a broken SKILL.md");
                }
                Err(e) => tracing::warn!(skill = id, error = %e, "skipping unreadable skill"),
            }
        }
        skills.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(skills)
    }

    /// One skill, or 404 if it does not exist or its `SKILL.md` is broken.
    async fn find_skill(&self, id: &str) -> Result<Skill> {
        check_id("skillId", id)?;
        let dir = &self.info.skills_dir;
        match load(dir, id)
            .await
            .map_err(|e| io_error("cannot read skill in", &dir.join(id), e))?
        {
            Loaded::Skill(skill) => Ok(*skill),
            Loaded::Absent => Err(Error::not_found("Skill", id)),
            Loaded::Broken(reason) => {
                tracing::warn!(skill = id, %reason, "skill has a broken SKILL.md");
                Err(Error::not_found("Skill", id))
            }
        }
    }

    /// `GET /api/skills/:id`: the skill's identity and its instructions.
    pub async fn get_skill(&self, id: &str) -> Result<SkillDetail> {
        let skill = self.find_skill(id).await?;
        Ok(SkillDetail {
            summary: summary(&skill),
            instructions: skill.content,
        })
    }

    /// Skills for an agent mode: `coordinate` gets the orchestrator skills, `execute` all
    /// others.
    pub async fn skills_for_mode(&self, mode: &str) -> Result<Vec<SkillSummary>> {
        check_enum("mode", mode, &["execute", "coordinate"])?;
        let want_orchestrator = mode == "coordinate";
        Ok(self
            .list_skills()
            .await?
            .iter()
            .filter(|s| (s.role.as_deref() == Some(ORCHESTRATOR_ROLE)) == want_orchestrator)
            .map(summary)
            .collect())
    }

    /// Re-reads a skill from disk. Since nothing is cached, this is a read that confirms the
    /// skill exists and parses; it is kept because upstream clients call it.
    pub async fn reload_skill(&self, id: &str) -> Result<SkillReloaded> {
        let skill = self.find_skill(id).await?;
        Ok(SkillReloaded {
            summary: summary(&skill),
            reloaded: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "---\n\
        name: Code Review\n\
        description: Reviews a diff\n\
        version: 2.1\n\
        triggers: [review, pr]\n\
        role: orchestrator\n\
        scope: project\n\
        output-format: markdown\n\
        language: rust\n\
        framework: axum\n\
        tags: security\n\
        category: quality\n\
        license: MIT\n\
        unknown: ignored\n\
        ---\n\
        \n\
        # Steps\n\
        Read the diff.\n";

    #[test]
    fn parses_every_key_and_the_body() {
        let s = parse_skill("code-review", FULL).unwrap();
        assert_eq!(s.id, "code-review");
        assert_eq!(s.name, "Code Review");
        assert_eq!(s.description, "Reviews a diff");
        assert_eq!(s.version, "2.1");
        assert_eq!(s.triggers, Some(vec!["review".into(), "pr".into()]));
        assert_eq!(s.role.as_deref(), Some("orchestrator"));
        assert_eq!(s.scope.as_deref(), Some("project"));
        assert_eq!(s.output_format.as_deref(), Some("markdown"));
        assert_eq!(s.language.as_deref(), Some("rust"));
        assert_eq!(s.framework.as_deref(), Some("axum"));
        assert_eq!(s.tags, Some(vec!["security".into()]));
        assert_eq!(s.category.as_deref(), Some("quality"));
        assert_eq!(s.license.as_deref(), Some("MIT"));
        assert_eq!(s.content, "# Steps\nRead the diff.");
        assert!(!s.has_references);
        assert_eq!(summary(&s).kind, "mode");
    }

    #[test]
    fn defaults_and_custom_type() {
        let s = parse_skill("x", "---\nname: X\ndescription: ''\n---\nbody").unwrap();
        assert_eq!(s.version, DEFAULT_VERSION);
        assert_eq!(s.triggers, None);
        assert_eq!(s.role, None);
        assert_eq!(s.content, "body");
        assert_eq!(summary(&s).kind, "custom");
    }

    #[test]
    fn accepts_crlf_bom_and_empty_body() {
        let s = parse_skill("x", "\u{feff}---\r\nname: X\r\ndescription: d\r\n---\r\n").unwrap();
        assert_eq!(s.name, "X");
        assert_eq!(s.description, "d");
        assert_eq!(s.content, "");
    }

    #[test]
    fn block_scalars_and_multiline_lists() {
        let text = "---\nname: X\ndescription: >\n  one\n  two\ntags:\n  - a\n  - 3\n---\n";
        let s = parse_skill("x", text).unwrap();
        assert_eq!(s.description, "one two\n");
        assert_eq!(s.tags, Some(vec!["a".into(), "3".into()]));
    }

    #[test]
    fn rejects_broken_front_matter() {
        use FrontMatterError::*;
        let cases: &[(&str, FrontMatterError)] = &[
            ("", Missing),
            ("# no front matter\n", Missing),
            ("text\n---\nname: X\n---\n", Missing),
            ("---\nname: X\ndescription: d\n", Unterminated),
            ("---\n---\nbody", NotAMapping),
            ("---\n- a\n- b\n---\n", NotAMapping),
            ("---\nname: X\n---\n", MissingField("description")),
            ("---\ndescription: d\n---\n", MissingField("name")),
            (
                "---\nname: '  '\ndescription: d\n---\n",
                MissingField("name"),
            ),
            ("---\nname: [a]\ndescription: d\n---\n", WrongType("name")),
            (
                "---\nname: X\ndescription: d\ntags: [[a]]\n---\n",
                WrongType("tags"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_skill("x", text).unwrap_err(), *want, "{text:?}");
        }
        assert!(matches!(
            parse_skill("x", "---\nname: [unclosed\n---\n"),
            Err(Yaml(_))
        ));
    }

    #[test]
    fn a_closing_line_inside_the_body_is_content() {
        let s = parse_skill("x", "---\nname: X\ndescription: d\n---\nintro\n---\nmore\n").unwrap();
        assert_eq!(s.content, "intro\n---\nmore");
    }
}
