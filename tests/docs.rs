//! The documentation keeps up with the code: every config key (walked from
//! the config structs' serde definitions) has a row in
//! docs/configuration.md and every row names a real key; every metric the
//! code registers is in docs/metrics.md; every page the README points to
//! exists.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The first backticked word of a markdown table row (`| \`key\` | ...`).
fn row_key(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("| `")?;
    rest.split_once('`').map(|(k, _)| k)
}

/// `## \`[bgp]\``, `## \`[[bgp.neighbor]]\`` → the section as written.
fn heading_section(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("## `")?;
    let (s, _) = rest.split_once('`')?;
    s.starts_with('[').then_some(s)
}

/// (section → keys) documented in docs/configuration.md.
fn documented_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in read("docs/configuration.md").lines() {
        if line.starts_with("## ") {
            section = heading_section(line).map(str::to_string);
            if let Some(s) = &section {
                out.entry(s.clone()).or_default();
            }
        } else if let (Some(s), Some(k)) = (&section, row_key(line))
            && k != "key"
        {
            out.entry(s.clone()).or_default().insert(k.to_string());
        }
    }
    out
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let keys = dnsbgpd::config::keys();
    assert!(keys.len() > 40, "the walk found only {} keys: {keys:?}", keys.len());
    let docs = documented_keys();
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut code: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in &keys {
        if k.section.is_empty() {
            // A top-level table: its heading must exist.
            let heading = [format!("[{}]", k.name), format!("[[{}]]", k.name)];
            if !heading.iter().any(|h| docs.contains_key(h)) {
                missing.entry(heading[0].clone()).or_default().push("(the section heading itself)".into());
            }
            continue;
        }
        code.entry(k.section.clone()).or_default().insert(k.name.clone());
        if !docs.get(&k.section).is_some_and(|d| d.contains(&k.name)) {
            missing.entry(k.section.clone()).or_default().push(k.name.clone());
        }
    }
    let mut message = String::new();
    for (section, names) in &missing {
        message.push_str(&format!("\n  under `## `{section}``:"));
        for n in names {
            message.push_str(&format!("\n    | `{n}` | DEFAULT | MEANING |   ({section} {n})"));
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md lacks these config keys; add a row for each:{message}");

    // Rows for keys that do not exist (in sections the code has).
    let stale: Vec<String> = docs
        .iter()
        .filter_map(|(s, ks)| code.get(s).map(|c| (s, ks, c)))
        .flat_map(|(s, ks, c)| ks.iter().filter(|k| !c.contains(*k)).map(move |k| format!("{s} {k}")))
        .collect();
    assert!(stale.is_empty(), "docs/configuration.md documents keys the config does not have: {stale:?}");
}

/// Every metric name registered in src/ (`register("name", ...)`, with the
/// prefix of a `sub_registry_with_prefix("p")` earlier in the same file).
fn registered_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let mut prefix = String::new();
        let mut rest = text.as_str();
        loop {
            let sub = rest.find("sub_registry_with_prefix(\"");
            let reg = rest.find(".register(").or_else(|| rest.find(".register_with_unit("));
            let (at, is_sub) = match (sub, reg) {
                (Some(s), Some(r)) if s < r => (s, true),
                (_, Some(r)) => (r, false),
                (Some(s), None) => (s, true),
                (None, None) => break,
            };
            let after = &rest[at..];
            let Some(open) = after.find('(') else { break };
            let args = after[open + 1..].trim_start();
            rest = &after[open + 1..];
            let Some(lit) = args.strip_prefix('"') else { continue };
            let Some((name, _)) = lit.split_once('"') else { continue };
            if is_sub {
                prefix = format!("{name}_");
            } else if name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                names.insert(format!("dnsbgpd_{prefix}{name}"));
            }
        }
    }
    names
}

#[test]
fn every_registered_metric_is_in_docs_metrics() {
    let names = registered_metrics();
    assert!(names.len() > 30, "found only {} metrics: {names:?}", names.len());
    assert!(names.contains("dnsbgpd_sync_changes_sent") && names.contains("dnsbgpd_bgp_flaps"), "{names:?}");
    let docs = read("docs/metrics.md");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !["`", "_total`", "{", "_total{"].iter().any(|end| docs.contains(&format!("`{n}{end}"))))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md lacks these metrics (a row each: | `NAME` | type | labels | meaning |): {missing:?}"
    );
}

#[test]
fn every_page_the_readme_points_to_exists() {
    let readme = read("README.md");
    let mut pages = BTreeSet::new();
    for part in readme.split("](").skip(1) {
        let Some((target, _)) = part.split_once(')') else { continue };
        if !target.contains("://") && !target.starts_with('#') {
            pages.insert(target.split('#').next().unwrap_or(target).to_string());
        }
    }
    for page in [
        "docs/configuration.md",
        "docs/lists.md",
        "docs/routes.md",
        "docs/bgp.md",
        "docs/sync.md",
        "docs/blocking.md",
        "docs/operations.md",
        "docs/metrics.md",
    ] {
        assert!(pages.contains(page), "README.md does not point to {page}");
    }
    for p in &pages {
        assert!(root().join(p).exists(), "README.md points to {p}, which does not exist");
    }
}

/// The README's unbound, BIND and bird snippets pass the real checkers
/// (`unbound-checkconf`, `named-checkconf`, `bird -p`), and so do the
/// files in deploy/ they come from.
#[test]
fn readme_snippets_pass_the_real_config_checkers() -> anyhow::Result<()> {
    if !common::peers::require(&["unbound-checkconf", "named-checkconf"])
        || !common::bgp_peers::require_bgp(common::bgp_peers::BIRD_BINS)
    {
        return Ok(());
    }
    let readme = read("README.md");
    let block = |lang: &str| -> String {
        let start = readme.find(&format!("```{lang}\n")).unwrap_or_else(|| panic!("README has no ```{lang} block"));
        let body = &readme[start + lang.len() + 4..];
        body[..body.find("```").unwrap_or(body.len())].to_string()
    };
    let tmp = tempfile::tempdir()?;
    let check = |what: &str, program: &str, args: &[&str], file: &Path| -> anyhow::Result<()> {
        let path = common::peers::find_bin(program).unwrap_or_else(|| program.into());
        let out = std::process::Command::new(path).args(args).arg(file).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{what} fails {program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    // unbound: the dnstap clause with a server clause that does not chroot.
    let unbound = tmp.path().join("unbound.conf");
    std::fs::write(&unbound, format!("server:\n    chroot: \"\"\n{}", block("unbound")))?;
    check("README unbound snippet", "unbound-checkconf", &[], &unbound)?;
    std::fs::write(
        &unbound,
        format!("server:\n    chroot: \"\"\n{}", std::fs::read_to_string(root().join("deploy/resolver/unbound.conf"))?),
    )?;
    check("deploy/resolver/unbound.conf", "unbound-checkconf", &[], &unbound)?;
    let named = tmp.path().join("named.conf");
    std::fs::write(&named, block("named"))?;
    check("README BIND snippet", "named-checkconf", &[], &named)?;
    check("deploy/resolver/named.conf", "named-checkconf", &[], &root().join("deploy/resolver/named.conf"))?;
    let bird = tmp.path().join("bird.conf");
    std::fs::write(&bird, block("bird"))?;
    check("README bird snippet", "bird", &["-p", "-c"], &bird)?;
    check("deploy/router/bird.conf", "bird", &["-p", "-c"], &root().join("deploy/router/bird.conf"))?;
    // The toml snippet is a valid fragment of a config.
    let toml = block("toml");
    let conf = format!("[dnstap]\nsocket = \"/run/dnsbgpd/dnstap.sock\"\n{toml}");
    std::fs::write(tmp.path().join("lists.txt"), "")?;
    dnsbgpd::config::Settings::parse(&conf, Path::new("README.md"), tmp.path(), None)
        .map_err(|e| anyhow::anyhow!("README toml snippet: {e}"))?;
    Ok(())
}
