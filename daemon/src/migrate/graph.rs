//! The revision graph: heads, bases, branch and merge points, and the target language of
//! alembic (`head`, `heads`, `base`, unique id prefixes, `+N`, `-N`, `REV+N`, `REV-N`).

use std::collections::HashMap;

use super::script::Revision;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("revision {id} is defined twice: {first} and {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
    #[error("{path}: revision {id} revises {parent}, which no revision file defines")]
    MissingParent {
        id: String,
        parent: String,
        path: String,
    },
    #[error("the revisions {0} form a cycle")]
    Cycle(String),
    #[error("Can't locate revision identified by '{0}'")]
    Unknown(String),
    #[error("revision prefix '{spec}' is ambiguous: it matches {candidates}")]
    Ambiguous { spec: String, candidates: String },
    #[error("Multiple head revisions are present for given argument '{spec}': {heads}; name one of them, or use 'heads' for all heads")]
    MultipleHeads { spec: String, heads: String },
    #[error("Relative revision {spec} didn't produce {n} migrations")]
    Relative { spec: String, n: usize },
    #[error("Ambiguous walk: {0}")]
    AmbiguousWalk(String),
    #[error("Destination {0} is not a valid downgrade target from current head(s)")]
    NotDowngradeTarget(String),
}

#[derive(Debug)]
pub struct Graph {
    pub revs: Vec<Revision>,
    index: HashMap<String, usize>,
    parents: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
    /// Parents before children; ties broken by create date, then id, so output is stable.
    topo: Vec<usize>,
}

/// What a target names: a set of revisions (empty = base).
pub type Target = Vec<usize>;

impl Graph {
    pub fn build(revs: Vec<Revision>) -> Result<Graph, GraphError> {
        let mut index = HashMap::new();
        for (i, r) in revs.iter().enumerate() {
            if let Some(&j) = index.get(&r.id) {
                let first: &Revision = &revs[j];
                return Err(GraphError::Duplicate {
                    id: r.id.clone(),
                    first: first.path.clone(),
                    second: r.path.clone(),
                });
            }
            index.insert(r.id.clone(), i);
        }
        let mut parents = vec![Vec::new(); revs.len()];
        let mut children = vec![Vec::new(); revs.len()];
        for (i, r) in revs.iter().enumerate() {
            for p in &r.parents {
                let &pi = index.get(p).ok_or_else(|| GraphError::MissingParent {
                    id: r.id.clone(),
                    parent: p.clone(),
                    path: r.path.clone(),
                })?;
                parents[i].push(pi);
                children[pi].push(i);
            }
        }
        let key = |i: usize| (revs[i].create_date.clone(), revs[i].id.clone());
        for c in &mut children {
            c.sort_by_key(|&i| key(i));
        }
        // Kahn's algorithm, always taking the oldest ready revision.
        let mut pending: Vec<usize> = parents.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..revs.len()).filter(|&i| pending[i] == 0).collect();
        let mut topo = Vec::with_capacity(revs.len());
        while !ready.is_empty() {
            ready.sort_by_key(|&i| std::cmp::Reverse(key(i)));
            let i = ready.pop().expect("non-empty");
            topo.push(i);
            for &c in &children[i] {
                pending[c] -= 1;
                if pending[c] == 0 {
                    ready.push(c);
                }
            }
        }
        if topo.len() != revs.len() {
            let stuck: Vec<&str> = (0..revs.len())
                .filter(|&i| pending[i] > 0)
                .map(|i| revs[i].id.as_str())
                .collect();
            return Err(GraphError::Cycle(stuck.join(", ")));
        }
        Ok(Graph {
            revs,
            index,
            parents,
            children,
            topo,
        })
    }

    pub fn rev(&self, i: usize) -> &Revision {
        &self.revs[i]
    }
    pub fn id(&self, i: usize) -> &str {
        &self.revs[i].id
    }
    pub fn topo(&self) -> &[usize] {
        &self.topo
    }
    pub fn parents(&self, i: usize) -> &[usize] {
        &self.parents[i]
    }
    pub fn children(&self, i: usize) -> &[usize] {
        &self.children[i]
    }
    pub fn lookup(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
    pub fn heads(&self) -> Vec<usize> {
        self.topo
            .iter()
            .copied()
            .filter(|&i| self.children[i].is_empty())
            .collect()
    }
    pub fn bases(&self) -> Vec<usize> {
        self.topo
            .iter()
            .copied()
            .filter(|&i| self.parents[i].is_empty())
            .collect()
    }
    pub fn is_head(&self, i: usize) -> bool {
        self.children[i].is_empty()
    }
    pub fn is_branchpoint(&self, i: usize) -> bool {
        self.children[i].len() > 1
    }
    pub fn is_mergepoint(&self, i: usize) -> bool {
        self.parents[i].len() > 1
    }

    pub fn ids(&self, set: &[usize]) -> String {
        set.iter()
            .map(|&i| self.id(i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The set itself and everything below it.
    pub fn ancestors(&self, set: &[usize]) -> Vec<bool> {
        let mut seen = vec![false; self.revs.len()];
        let mut stack: Vec<usize> = set.to_vec();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(&self.parents[i]);
            }
        }
        seen
    }

    /// Everything strictly above the set.
    pub fn strict_descendants(&self, set: &[usize]) -> Vec<bool> {
        let mut seen = vec![false; self.revs.len()];
        let mut stack: Vec<usize> = set.iter().flat_map(|&i| self.children[i].clone()).collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(&self.children[i]);
            }
        }
        seen
    }

    /// A full id or a unique prefix of one.
    pub fn resolve_id(&self, spec: &str) -> Result<usize, GraphError> {
        if let Some(i) = self.lookup(spec) {
            return Ok(i);
        }
        let lower = spec.to_ascii_lowercase();
        let matches: Vec<usize> = self
            .topo
            .iter()
            .copied()
            .filter(|&i| !spec.is_empty() && self.id(i).starts_with(&lower))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(GraphError::Unknown(spec.to_owned())),
            many => Err(GraphError::Ambiguous {
                spec: spec.to_owned(),
                candidates: many
                    .iter()
                    .map(|&i| format!("{} ({})", self.id(i), self.rev(i).message))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The single head, or an error naming all of them.
    pub fn single_head(&self, spec: &str) -> Result<Option<usize>, GraphError> {
        match self.heads().as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            many => Err(GraphError::MultipleHeads {
                spec: spec.to_owned(),
                heads: self.ids(many),
            }),
        }
    }

    /// Resolves a target relative to the database's current heads.
    pub fn resolve_target(&self, spec: &str, current: &[usize]) -> Result<Target, GraphError> {
        match spec {
            "base" => return Ok(vec![]),
            "heads" => return Ok(self.heads()),
            "head" => return Ok(self.single_head(spec)?.into_iter().collect()),
            "current" => return Ok(current.to_vec()),
            _ => {}
        }
        if let Some((anchor, sign, n)) = split_relative(spec) {
            let from: Option<usize> = match anchor {
                "" | "current" => match current {
                    [] => None,
                    [one] => Some(*one),
                    many => {
                        return Err(GraphError::AmbiguousWalk(format!(
                            "the database has several heads ({}); name the one to move from, as REV{sign}{n}",
                            self.ids(many)
                        )))
                    }
                },
                "head" => self.single_head("head")?,
                "base" => None,
                rev => Some(self.resolve_id(rev)?),
            };
            let walked = if sign == '-' {
                self.walk_down(from, n)
            } else {
                self.walk_up(from, n)
            };
            return walked
                .map_err(|e| match e {
                    WalkError::Short => GraphError::Relative {
                        spec: spec.to_owned(),
                        n,
                    },
                    WalkError::Fork(msg) => GraphError::AmbiguousWalk(msg),
                })
                .map(|t| t.into_iter().collect());
        }
        Ok(vec![self.resolve_id(spec)?])
    }

    fn walk_down(&self, from: Option<usize>, n: usize) -> Result<Option<usize>, WalkError> {
        let mut cur = from;
        for _ in 0..n {
            let i = cur.ok_or(WalkError::Short)?;
            cur = match self.parents[i].as_slice() {
                [] => None,
                [p] => Some(*p),
                many => {
                    return Err(WalkError::Fork(format!(
                        "{} merges {}; name the parent to go down to",
                        self.id(i),
                        self.ids(many)
                    )))
                }
            };
        }
        Ok(cur)
    }

    fn walk_up(&self, from: Option<usize>, n: usize) -> Result<Option<usize>, WalkError> {
        let mut cur = from;
        for _ in 0..n {
            let next = match cur {
                Some(i) => self.children[i].clone(),
                None => self.bases(),
            };
            cur = match next.as_slice() {
                [] => return Err(WalkError::Short),
                [c] => Some(*c),
                many => {
                    let at = cur.map_or("base".to_string(), |i| self.id(i).to_string());
                    return Err(WalkError::Fork(format!(
                        "{at} branches into {}; name the revision to go up to",
                        self.ids(many)
                    )));
                }
            };
        }
        Ok(cur)
    }

    /// Revisions to apply to go from `current` up to `target`, parents first.
    pub fn upgrade_path(&self, current: &[usize], target: &[usize]) -> Vec<usize> {
        let have = self.ancestors(current);
        let want = self.ancestors(target);
        self.topo
            .iter()
            .copied()
            .filter(|&i| want[i] && !have[i])
            .collect()
    }

    /// Revisions to revert to go from `current` down to `target`, children first.
    pub fn downgrade_path(
        &self,
        current: &[usize],
        target: &[usize],
    ) -> Result<Vec<usize>, GraphError> {
        let applied = self.ancestors(current);
        if let Some(&bad) = target.iter().find(|&&t| !applied[t]) {
            return Err(GraphError::NotDowngradeTarget(self.id(bad).to_owned()));
        }
        let above = if target.is_empty() {
            applied.clone()
        } else {
            self.strict_descendants(target)
        };
        Ok(self
            .topo
            .iter()
            .rev()
            .copied()
            .filter(|&i| applied[i] && above[i])
            .collect())
    }
}

enum WalkError {
    Short,
    Fork(String),
}

/// `-2` -> ("", '-', 2); `ae10+1` -> ("ae10", '+', 1); `head-1` -> ("head", '-', 1).
pub fn split_relative(spec: &str) -> Option<(&str, char, usize)> {
    let pos = spec.rfind(['+', '-'])?;
    let n: usize = spec[pos + 1..].parse().ok()?;
    let sign = spec[pos..].chars().next()?;
    Some((&spec[..pos], sign, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::script::Revision;

    fn rev(id: &str, parents: &[&str]) -> Revision {
        Revision {
            id: id.repeat(12 / id.len()),
            parents: parents.iter().map(|p| p.repeat(12 / p.len())).collect(),
            message: format!("msg {id}"),
            create_date: String::new(),
            doc: vec![],
            path: format!("{id}.sql"),
            upgrade: vec![],
            downgrade: vec![],
            checksum: String::new(),
        }
    }

    /// a <- b <- c, and c branches into d1/d2 ("d1"/"d2" ids), merged by e.
    fn branched() -> Graph {
        Graph::build(vec![
            rev("a", &[]),
            rev("b", &["a"]),
            rev("c", &["b"]),
            rev("d1", &["c"]),
            rev("d2", &["c"]),
            rev("e", &["d1", "d2"]),
        ])
        .unwrap()
    }

    fn id(g: &Graph, i: &[usize]) -> String {
        g.ids(i)
    }

    #[test]
    fn heads_bases_and_markers() {
        let g = branched();
        assert_eq!(id(&g, &g.heads()), "eeeeeeeeeeee");
        assert_eq!(id(&g, &g.bases()), "aaaaaaaaaaaa");
        let c = g.lookup("cccccccccccc").unwrap();
        assert!(g.is_branchpoint(c));
        assert!(g.is_mergepoint(g.lookup("eeeeeeeeeeee").unwrap()));
    }

    #[test]
    fn prefixes() {
        let g = branched();
        assert_eq!(g.id(g.resolve_id("c").unwrap()), "cccccccccccc");
        match g.resolve_id("d") {
            Err(GraphError::Ambiguous { candidates, .. }) => {
                assert!(candidates.contains("d1d1d1d1d1d1") && candidates.contains("d2d2d2d2d2d2"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.resolve_id("f"), Err(GraphError::Unknown("f".into())));
    }

    #[test]
    fn relative_steps() {
        let g = branched();
        let c = g.lookup("cccccccccccc").unwrap();
        assert_eq!(
            id(&g, &g.resolve_target("-2", &[c]).unwrap()),
            "aaaaaaaaaaaa"
        );
        assert_eq!(g.resolve_target("-3", &[c]).unwrap(), Vec::<usize>::new());
        assert_eq!(
            g.resolve_target("-4", &[c]),
            Err(GraphError::Relative {
                spec: "-4".into(),
                n: 4
            })
        );
        assert_eq!(
            id(&g, &g.resolve_target("+1", &[]).unwrap()),
            "aaaaaaaaaaaa"
        );
        assert!(matches!(
            g.resolve_target("+1", &[c]),
            Err(GraphError::AmbiguousWalk(_))
        ));
        let e = g.lookup("eeeeeeeeeeee").unwrap();
        assert!(matches!(
            g.resolve_target("-1", &[e]),
            Err(GraphError::AmbiguousWalk(_))
        ));
        assert_eq!(
            id(&g, &g.resolve_target("b+1", &[]).unwrap()),
            "cccccccccccc"
        );
    }

    #[test]
    fn paths() {
        let g = branched();
        let c = g.lookup("cccccccccccc").unwrap();
        let d1 = g.lookup("d1d1d1d1d1d1").unwrap();
        let up = g.upgrade_path(&[c], &g.heads());
        assert_eq!(id(&g, &up), "d1d1d1d1d1d1, d2d2d2d2d2d2, eeeeeeeeeeee");
        // Upgrading to an older revision is nothing to do.
        assert!(g.upgrade_path(&[d1], &[c]).is_empty());
        let down = g.downgrade_path(&g.heads(), &[c]).unwrap();
        assert_eq!(id(&g, &down), "eeeeeeeeeeee, d2d2d2d2d2d2, d1d1d1d1d1d1");
        let all = g.downgrade_path(&[c], &[]).unwrap();
        assert_eq!(id(&g, &all), "cccccccccccc, bbbbbbbbbbbb, aaaaaaaaaaaa");
        assert_eq!(
            g.downgrade_path(&[c], &[d1]),
            Err(GraphError::NotDowngradeTarget("d1d1d1d1d1d1".into()))
        );
    }

    #[test]
    fn two_heads_refuse_head() {
        let g = Graph::build(vec![rev("a", &[]), rev("b", &["a"]), rev("c", &["a"])]).unwrap();
        assert!(matches!(
            g.resolve_target("head", &[]),
            Err(GraphError::MultipleHeads { .. })
        ));
        assert_eq!(g.resolve_target("heads", &[]).unwrap().len(), 2);
    }

    #[test]
    fn broken_graphs() {
        assert!(matches!(
            Graph::build(vec![rev("a", &["b"])]),
            Err(GraphError::MissingParent { .. })
        ));
        assert!(matches!(
            Graph::build(vec![rev("a", &[]), rev("a", &[])]),
            Err(GraphError::Duplicate { .. })
        ));
        assert!(matches!(
            Graph::build(vec![rev("a", &["b"]), rev("b", &["a"])]),
            Err(GraphError::Cycle(_))
        ));
    }
}
