//! The platform's Git conventions: `tenant/<slug>` branches, `app/flows/<slug>/`
//! folders and `bld/<slug>/<ts>-<target>` build tags (docs/SCANNER.md, "Git conventions").

pub(crate) mod check;
pub(crate) mod init;
pub(crate) mod names;
pub(crate) mod policy;
pub(crate) mod prune;
pub(crate) mod repo;
