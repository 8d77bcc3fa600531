//! `[blocking]` and `[[blocking.rule]]`: raw TOML structs and their
//! validation into [`BlockingSettings`]. Called from `crate::config`, which
//! owns the file and turns each problem into `FILE:LINE: message`; the
//! `[blocking.attach]` subsection is checked by
//! [`attach_config::validate`](super::attach_config::validate).

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::attach_config::{AttachSettings, RawAttach};
use super::kernel::QTYPE_ANY;
use crate::names::NameBuf;
use crate::values::ConfigDuration;

pub const DEFAULT_EVALUATE_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_TRACKED: usize = 1_000_000;
pub const DEFAULT_MAX_BLOCKS: usize = 100_000;
pub const DEFAULT_MAX_TRACKED_SUFFIXES: usize = 100_000;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_ALLOW: usize = 10;
pub const DEFAULT_MIN_RESPONSES: u32 = 20;
/// Distinct per-client counters beyond queries, responses and bytes
/// (one per distinct `qtype` of the qtype_rate rules and `rcode` of the
/// rcode rules): the per-tick record of a client is a fixed array.
pub const MAX_SELECTOR_COUNTERS: usize = 5;
/// The longest window a rule may have.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocking {
    v4_prefix: Option<Spanned<u8>>,
    v6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_domains: Vec<Spanned<String>>,
    evaluate_interval: Option<Spanned<ConfigDuration>>,
    max_tracked: Option<Spanned<usize>>,
    max_blocks: Option<Spanned<usize>>,
    max_tracked_suffixes: Option<Spanned<usize>>,
    attach: Option<Spanned<RawAttach>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

/// A qtype or rcode written as a name or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Number(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    kind: Spanned<String>,
    rate: Option<Spanned<f64>>,
    ratio: Option<Spanned<f64>>,
    window: Option<Spanned<ConfigDuration>>,
    duration: Option<Spanned<ConfigDuration>>,
    action: Option<Spanned<String>>,
    warning_rate: Option<Spanned<f64>>,
    warning_ratio: Option<Spanned<f64>>,
    reason: Option<String>,
    qtype: Option<Spanned<NameOrNumber>>,
    rcode: Option<Spanned<NameOrNumber>>,
    min_responses: Option<Spanned<u32>>,
    max_allow: Option<Spanned<usize>>,
}

/// The six rule kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    QueryRate,
    QtypeRate,
    RcodeRate,
    RcodeRatio,
    ResponseByteRate,
    NxdomainSuffix,
}

impl RuleKind {
    pub const ALL: [RuleKind; 6] = [
        RuleKind::QueryRate,
        RuleKind::QtypeRate,
        RuleKind::RcodeRate,
        RuleKind::RcodeRatio,
        RuleKind::ResponseByteRate,
        RuleKind::NxdomainSuffix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleKind::QueryRate => "query_rate",
            RuleKind::QtypeRate => "qtype_rate",
            RuleKind::RcodeRate => "rcode_rate",
            RuleKind::RcodeRatio => "rcode_ratio",
            RuleKind::ResponseByteRate => "response_byte_rate",
            RuleKind::NxdomainSuffix => "nxdomain_suffix",
        }
    }

    fn from_name(s: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the rule counts per client (else per name suffix).
    pub fn per_client(self) -> bool {
        self != RuleKind::NxdomainSuffix
    }
}

/// What a rule does when it triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// List the entry, enforce nothing.
    Warn,
    /// Drop in the kernel.
    Drop,
    /// Drop in the kernel and announce the source as a BGP blackhole route.
    Blackhole,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Drop => "drop",
            Action::Blackhole => "blackhole",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated `[[blocking.rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    pub name: Arc<str>,
    pub kind: RuleKind,
    /// Per second (queries, responses, bytes or NXDOMAIN answers); for
    /// `rcode_ratio` the ratio (0 < ratio ≤ 1).
    pub threshold: f64,
    /// Below `threshold`: crossing it gives a warning entry.
    pub warning: Option<f64>,
    pub window: Duration,
    pub duration: Duration,
    pub action: Action,
    pub reason: Arc<str>,
    /// `qtype_rate`.
    pub qtype: u16,
    /// `rcode_rate`, `rcode_ratio`.
    pub rcode: u8,
    /// `rcode_ratio`: fewer responses in the window never trigger.
    pub min_responses: u32,
    /// `nxdomain_suffix`: answered names below a blocked suffix that stay
    /// answered.
    pub max_allow: usize,
}

impl RuleSettings {
    /// The count that must be exceeded in a window (`rate × window`); for
    /// a ratio rule the ratio itself.
    pub fn limit(&self, level: f64) -> f64 {
        if self.kind == RuleKind::RcodeRatio { level } else { level * self.window.as_secs_f64() }
    }
}

/// A validated `[blocking]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockingSettings {
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    /// `(range, included)`: most specific wins.
    pub ranges: Vec<(IpNet, bool)>,
    /// Names (and everything below) nxdomain_suffix never counts or blocks.
    pub exclude_domains: Vec<Box<str>>,
    pub evaluate_interval: Duration,
    pub max_tracked: usize,
    pub max_blocks: usize,
    pub max_tracked_suffixes: usize,
    /// `None`: no kernel filter (blocks are computed, listed and exported
    /// over BGP only).
    pub attach: Option<AttachSettings>,
    pub rules: Vec<RuleSettings>,
}

impl Default for BlockingSettings {
    fn default() -> Self {
        BlockingSettings {
            v4_prefix: 32,
            v6_prefix: 64,
            ranges: Vec::new(),
            exclude_domains: Vec::new(),
            evaluate_interval: DEFAULT_EVALUATE_INTERVAL,
            max_tracked: DEFAULT_MAX_TRACKED,
            max_blocks: DEFAULT_MAX_BLOCKS,
            max_tracked_suffixes: DEFAULT_MAX_TRACKED_SUFFIXES,
            attach: None,
            rules: Vec::new(),
        }
    }
}

/// The rcode names operators write, by value.
pub const RCODES: [(&str, u8); 11] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
];

pub fn rcode_name(rcode: u8) -> String {
    RCODES.iter().find(|(_, v)| *v == rcode).map(|(n, _)| n.to_string()).unwrap_or_else(|| format!("RCODE{rcode}"))
}

/// A qtype from its mnemonic (`"AAAA"`), `"TYPE65"`, `"ANY"` or a number.
pub fn parse_qtype(text: &str) -> Option<u16> {
    let upper = text.trim().to_ascii_uppercase();
    if upper == "ANY" || upper == "*" {
        return Some(QTYPE_ANY);
    }
    if let Some(n) = upper.strip_prefix("TYPE") {
        return n.parse().ok();
    }
    if let Ok(n) = upper.parse::<u16>() {
        return Some(n);
    }
    let t: hickory_proto::rr::RecordType = upper.parse().ok()?;
    match u16::from(t) {
        0 => None,
        v => Some(v),
    }
}

/// The presentation of a qtype: its mnemonic, `ANY`, or `TYPE123`.
pub fn qtype_name(qtype: u16) -> String {
    if qtype == QTYPE_ANY {
        return "ANY".into();
    }
    let t = hickory_proto::rr::RecordType::from(qtype);
    match t {
        hickory_proto::rr::RecordType::Unknown(_) => format!("TYPE{qtype}"),
        t => t.to_string(),
    }
}

/// An address or range as exclude/include and the API take it: a bare
/// address is a /32 or /128; host bits must be zero.
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(crate::observation::canonical(a)),
            Err(_) => return Err(format!("{text:?} is not an address or CIDR range")),
        },
    };
    if net.trunc() != net {
        return Err(format!("{text:?} has host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(canonical_net(net))
}

/// IPv4-mapped IPv6 ranges become IPv4 ranges.
pub fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

fn selector(
    raw: &Spanned<NameOrNumber>,
    what: &str,
    parse: impl Fn(&str) -> Option<i64>,
    max: i64,
    problem: &mut dyn FnMut(Range<usize>, String),
) -> Option<i64> {
    let v = match raw.get_ref() {
        NameOrNumber::Number(n) => Some(*n),
        NameOrNumber::Name(s) => parse(s),
    };
    match v {
        Some(v) if (0..=max).contains(&v) => Some(v),
        _ => {
            let shown = match raw.get_ref() {
                NameOrNumber::Number(n) => n.to_string(),
                NameOrNumber::Name(s) => format!("{s:?}"),
            };
            problem(raw.span(), format!("invalid {what} {shown}"));
            None
        }
    }
}

/// Validates `raw`; `whole` is the span of the section.
pub fn validate(
    raw: Spanned<RawBlocking>,
    base: &Path,
    problem: &mut dyn FnMut(Range<usize>, String),
) -> BlockingSettings {
    let whole = raw.span();
    let raw = raw.into_inner();
    let mut s = BlockingSettings::default();
    if let Some(p) = raw.v4_prefix {
        if (1..=32).contains(p.get_ref()) {
            s.v4_prefix = *p.get_ref();
        } else {
            problem(p.span(), "v4_prefix must be between 1 and 32".into());
        }
    }
    if let Some(p) = raw.v6_prefix {
        if (1..=128).contains(p.get_ref()) {
            s.v6_prefix = *p.get_ref();
        } else {
            problem(p.span(), "v6_prefix must be between 1 and 128".into());
        }
    }
    for (list, included) in [(&raw.exclude, false), (&raw.include, true)] {
        for r in list {
            match parse_range(r.get_ref()) {
                Ok(net) => {
                    if let Some((_, other)) = s.ranges.iter().find(|(n, _)| *n == net) {
                        let msg = if *other == included {
                            format!("{net} is listed twice")
                        } else {
                            format!("{net} is both excluded and included")
                        };
                        problem(r.span(), msg);
                    } else {
                        s.ranges.push((net, included));
                    }
                }
                Err(e) => problem(r.span(), format!("{}: {e}", if included { "include" } else { "exclude" })),
            }
        }
    }
    for d in &raw.exclude_domains {
        match NameBuf::from_text(d.get_ref()) {
            Ok(n) if !n.is_root() => s.exclude_domains.push(n.to_string_lossy().into()),
            Ok(_) => problem(d.span(), "exclude_domains: the root cannot be excluded".into()),
            Err(e) => problem(d.span(), format!("exclude_domains: {:?}: {e}", d.get_ref())),
        }
    }
    if let Some(i) = raw.evaluate_interval {
        let d = i.get_ref().0;
        if d < Duration::from_millis(10) || d > Duration::from_secs(10) {
            problem(i.span(), "evaluate_interval must be between 10ms and 10s".into());
        } else {
            s.evaluate_interval = d;
        }
    }
    for (field, target, min) in [
        (&raw.max_tracked, &mut s.max_tracked, 16usize),
        (&raw.max_blocks, &mut s.max_blocks, 1),
        (&raw.max_tracked_suffixes, &mut s.max_tracked_suffixes, 16),
    ] {
        if let Some(v) = field {
            if *v.get_ref() < min || *v.get_ref() > 100_000_000 {
                problem(v.span(), format!("must be between {min} and 100000000"));
            } else {
                *target = *v.get_ref();
            }
        }
    }
    if let Some(a) = raw.attach {
        let span = a.span();
        s.attach = super::attach_config::validate(a.into_inner(), span, base, problem);
    }
    let mut selectors = std::collections::BTreeSet::new();
    for r in raw.rules {
        let rule_span = r.span();
        if let Some(rule) = validate_rule(r.into_inner(), rule_span.clone(), s.evaluate_interval, problem) {
            if s.rules.iter().any(|o| o.name == rule.name) {
                problem(rule_span, format!("duplicate rule name {:?}", &*rule.name));
                continue;
            }
            match rule.kind {
                RuleKind::QtypeRate => {
                    selectors.insert((0u8, rule.qtype));
                }
                RuleKind::RcodeRate | RuleKind::RcodeRatio => {
                    selectors.insert((1u8, u16::from(rule.rcode)));
                }
                _ => {}
            }
            if selectors.len() > MAX_SELECTOR_COUNTERS {
                problem(
                    rule_span,
                    format!(
                        "at most {MAX_SELECTOR_COUNTERS} distinct qtypes and rcodes can be counted per client \
                         (qtype_rate, rcode_rate and rcode_ratio rules)"
                    ),
                );
                continue;
            }
            s.rules.push(rule);
        }
    }
    let _ = whole;
    s
}

fn validate_rule(
    r: RawRule,
    whole: Range<usize>,
    interval: Duration,
    problem: &mut dyn FnMut(Range<usize>, String),
) -> Option<RuleSettings> {
    let mut ok = true;
    let mut bad = |span: Range<usize>, m: String| {
        ok = false;
        problem(span, m)
    };
    let name = r.name.get_ref().clone();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bad(r.name.span(), format!("rule name {name:?} must be non-empty and use only letters, digits, '-', '_', '.'"));
    }
    let Some(kind) = RuleKind::from_name(r.kind.get_ref()) else {
        bad(
            r.kind.span(),
            format!(
                "unknown rule kind {:?}: expected one of {}",
                r.kind.get_ref(),
                RuleKind::ALL.map(RuleKind::name).join(", ")
            ),
        );
        return None;
    };
    let ratio_rule = kind == RuleKind::RcodeRatio;
    let threshold = if ratio_rule {
        if let Some(rate) = &r.rate {
            bad(rate.span(), "rcode_ratio takes `ratio`, not `rate`".into());
        }
        match &r.ratio {
            Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => *v.get_ref(),
            Some(v) => {
                bad(v.span(), "ratio must be above 0 and at most 1".into());
                1.0
            }
            None => {
                bad(whole.clone(), format!("rule {name:?}: rcode_ratio needs `ratio` (e.g. 0.5)"));
                1.0
            }
        }
    } else {
        if let Some(v) = &r.ratio {
            bad(v.span(), format!("`ratio` applies to rcode_ratio only; {} takes `rate`", kind.name()));
        }
        match &r.rate {
            Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => *v.get_ref(),
            Some(v) => {
                bad(v.span(), "rate must be a positive number (per second)".into());
                1.0
            }
            None => {
                bad(whole.clone(), format!("rule {name:?}: {} needs `rate` (per second)", kind.name()));
                1.0
            }
        }
    };
    let warning = match (ratio_rule, &r.warning_rate, &r.warning_ratio) {
        (_, Some(a), Some(_)) => {
            bad(a.span(), "give `warning_rate` or `warning_ratio`, not both".into());
            None
        }
        (true, Some(a), None) => {
            bad(a.span(), "rcode_ratio takes `warning_ratio`, not `warning_rate`".into());
            None
        }
        (false, None, Some(a)) => {
            bad(a.span(), format!("{} takes `warning_rate`, not `warning_ratio`", kind.name()));
            None
        }
        (_, Some(w), None) | (_, None, Some(w)) => {
            let v = *w.get_ref();
            if !(v.is_finite() && v > 0.0 && v < threshold) {
                bad(w.span(), format!("the warning level must be above 0 and below the blocking level {threshold}"));
                None
            } else {
                Some(v)
            }
        }
        (_, None, None) => None,
    };
    let window = match &r.window {
        Some(w) if w.get_ref().0 < interval || w.get_ref().0 > MAX_WINDOW => {
            bad(w.span(), format!("window must be between evaluate_interval ({interval:?}) and 1h"));
            DEFAULT_WINDOW
        }
        Some(w) => w.get_ref().0,
        None => DEFAULT_WINDOW.max(interval),
    };
    let duration = match &r.duration {
        Some(d) if d.get_ref().0 < Duration::from_millis(100) || d.get_ref().0 > Duration::from_secs(30 * 86_400) => {
            bad(d.span(), "duration must be between 100ms and 30d".into());
            DEFAULT_DURATION
        }
        Some(d) => d.get_ref().0,
        None => DEFAULT_DURATION,
    };
    if !ratio_rule && threshold * window.as_secs_f64() >= f64::from(u32::MAX) {
        let span = r.rate.as_ref().map(Spanned::span).unwrap_or(whole.clone());
        bad(span, "rate × window must stay below 4294967295 (counts are 32-bit)".into());
    }
    let action = match r.action.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("drop", _)) => Action::Drop,
        Some(("warn", _)) => Action::Warn,
        Some(("blackhole", span)) => {
            if !kind.per_client() {
                bad(span, "action = \"blackhole\" applies to client rules; nxdomain_suffix blocks names".into());
            }
            Action::Blackhole
        }
        Some((other, span)) => {
            bad(span, format!("unknown action {other:?}: expected \"drop\", \"warn\" or \"blackhole\""));
            Action::Drop
        }
    };
    let mut qtype = QTYPE_ANY;
    match (&r.qtype, kind) {
        (Some(q), RuleKind::QtypeRate) => {
            if let Some(v) =
                selector(q, "qtype", |s| parse_qtype(s).map(i64::from), i64::from(u16::MAX), &mut |s, m| bad(s, m))
            {
                qtype = v as u16;
            }
        }
        (None, RuleKind::QtypeRate) => bad(whole.clone(), format!("rule {name:?}: qtype_rate needs `qtype`")),
        (Some(q), _) => bad(q.span(), format!("`qtype` applies to qtype_rate only, not {}", kind.name())),
        (None, _) => {}
    }
    let mut rcode = 0u8;
    let parse_rcode = |s: &str| RCODES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, v)| i64::from(*v));
    match (&r.rcode, kind) {
        (Some(c), RuleKind::RcodeRate | RuleKind::RcodeRatio) => {
            if let Some(v) = selector(c, "rcode", parse_rcode, 15, &mut |s, m| bad(s, m)) {
                rcode = v as u8;
            }
        }
        (None, RuleKind::RcodeRate | RuleKind::RcodeRatio) => {
            bad(whole.clone(), format!("rule {name:?}: {} needs `rcode` (e.g. \"NXDOMAIN\")", kind.name()))
        }
        (Some(c), _) => {
            bad(c.span(), format!("`rcode` applies to rcode_rate and rcode_ratio only, not {}", kind.name()))
        }
        (None, _) => {}
    }
    let min_responses = match (&r.min_responses, kind) {
        (Some(m), RuleKind::RcodeRatio) => *m.get_ref(),
        (Some(m), _) => {
            bad(m.span(), "`min_responses` applies to rcode_ratio only".into());
            0
        }
        (None, _) => DEFAULT_MIN_RESPONSES,
    };
    let max_allow = match (&r.max_allow, kind) {
        (Some(m), RuleKind::NxdomainSuffix) if *m.get_ref() > 1000 => {
            bad(m.span(), "max_allow must be at most 1000".into());
            DEFAULT_MAX_ALLOW
        }
        (Some(m), RuleKind::NxdomainSuffix) => *m.get_ref(),
        (Some(m), _) => {
            bad(m.span(), "`max_allow` applies to nxdomain_suffix only".into());
            0
        }
        (None, _) => DEFAULT_MAX_ALLOW,
    };
    let reason: Arc<str> = match r.reason {
        Some(text) => text.into(),
        None => default_reason(kind, threshold, qtype, rcode).into(),
    };
    ok.then(|| RuleSettings {
        name: name.into(),
        kind,
        threshold,
        warning,
        window,
        duration,
        action,
        reason,
        qtype,
        rcode,
        min_responses,
        max_allow,
    })
}

fn default_reason(kind: RuleKind, threshold: f64, qtype: u16, rcode: u8) -> String {
    match kind {
        RuleKind::QueryRate => format!("more than {threshold} queries/s"),
        RuleKind::QtypeRate => format!("more than {threshold} {} queries/s", qtype_name(qtype)),
        RuleKind::RcodeRate => format!("more than {threshold} {} responses/s", rcode_name(rcode)),
        RuleKind::RcodeRatio => format!("{} ratio above {threshold}", rcode_name(rcode)),
        RuleKind::ResponseByteRate => format!("more than {threshold} response bytes/s"),
        RuleKind::NxdomainSuffix => format!("more than {threshold} NXDOMAIN/s below the suffix"),
    }
}

#[cfg(test)]
mod tests {
    use crate::blocking::config::{Action, RuleKind};
    use crate::config::Settings;

    fn parse(blocking: &str) -> Result<Settings, crate::config::ConfigError> {
        Settings::parse(&format!("[dnstap]\nsocket = \"/x\"\n{blocking}"), "t.toml".as_ref(), "/etc".as_ref(), None)
    }

    #[test]
    fn defaults_and_every_kind() {
        let s = parse(
            "[blocking]\nexclude = [\"10.0.0.0/8\"]\ninclude = [\"10.1.2.3\"]\nexclude_domains = [\"Example.COM.\"]\n\
             [[blocking.rule]]\nname = \"qps\"\nkind = \"query_rate\"\nrate = 100\n\
             [[blocking.rule]]\nname = \"any\"\nkind = \"qtype_rate\"\nqtype = \"ANY\"\nrate = 5\nwindow = \"1s\"\n\
             [[blocking.rule]]\nname = \"nx\"\nkind = \"rcode_rate\"\nrcode = \"nxdomain\"\nrate = 10\nwarning_rate = 5\n\
             [[blocking.rule]]\nname = \"sf\"\nkind = \"rcode_ratio\"\nrcode = 2\nratio = 0.5\nmin_responses = 10\n\
             [[blocking.rule]]\nname = \"bytes\"\nkind = \"response_byte_rate\"\nrate = 100000\naction = \"blackhole\"\n\
             [[blocking.rule]]\nname = \"rnd\"\nkind = \"nxdomain_suffix\"\nrate = 20\nmax_allow = 3\naction = \"warn\"\n",
        )
        .unwrap();
        let b = s.blocking.unwrap();
        assert_eq!((b.v4_prefix, b.v6_prefix, b.max_tracked, b.max_blocks), (32, 64, 1_000_000, 100_000));
        assert_eq!(b.evaluate_interval, std::time::Duration::from_millis(100));
        assert_eq!(b.ranges.len(), 2);
        assert_eq!(&*b.exclude_domains[0], "example.com");
        let kinds: Vec<RuleKind> = b.rules.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, RuleKind::ALL);
        assert_eq!(b.rules[0].window, std::time::Duration::from_secs(10));
        assert_eq!(b.rules[0].duration, std::time::Duration::from_secs(60));
        assert_eq!(b.rules[0].limit(b.rules[0].threshold), 1000.0);
        assert_eq!(b.rules[1].qtype, 255);
        assert_eq!(b.rules[2].rcode, 3);
        assert_eq!(b.rules[2].warning, Some(5.0));
        assert_eq!((b.rules[3].rcode, b.rules[3].min_responses, b.rules[3].threshold), (2, 10, 0.5));
        assert_eq!(b.rules[4].action, Action::Blackhole);
        assert_eq!((b.rules[5].max_allow, b.rules[5].action), (3, Action::Warn));
        assert!(b.attach.is_none());
    }

    #[test]
    fn problems_name_their_lines() {
        let err = parse(
            "[blocking]\nv4_prefix = 33\nexclude = [\"10.0.0.1/8\"]\n\
             [[blocking.rule]]\nname = \"a\"\nkind = \"query_rat\"\nrate = 1\n\
             [[blocking.rule]]\nname = \"b\"\nkind = \"rcode_ratio\"\nrate = 1\nrcode = \"NXDOMAIN\"\n\
             [[blocking.rule]]\nname = \"c\"\nkind = \"query_rate\"\nrate = 10\nwarning_rate = 20\nqtype = \"A\"\n\
             [[blocking.rule]]\nname = \"d\"\nkind = \"nxdomain_suffix\"\nrate = 10\naction = \"blackhole\"\nwindow = \"1ms\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![4, 5, 8, 13, 10, 19, 20, 26, 25], "{err}");
        assert!(err.to_string().contains("t.toml:5: invalid v4_prefix") || err.to_string().contains("v4_prefix"));
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
        assert!(err.to_string().contains("unknown rule kind \"query_rat\""), "{err}");
        // Unknown keys are rejected with their line.
        let err = parse("[blocking]\n[[blocking.rule]]\nname = \"a\"\nkind = \"query_rate\"\nrate = 1\nrat = 2\n")
            .unwrap_err();
        assert_eq!(err.0[0].line, 8, "{err}");
    }

    #[test]
    fn a_section_without_rules_is_for_manual_blocks() {
        let s = parse("[blocking]\nv4_prefix = 24\n").unwrap();
        assert!(s.blocking.unwrap().rules.is_empty());
    }

    #[test]
    fn qtypes_and_ranges() {
        use super::*;
        assert_eq!(parse_qtype("aaaa"), Some(28));
        assert_eq!(parse_qtype("TYPE65"), Some(65));
        assert_eq!(parse_qtype("any"), Some(255));
        assert_eq!(parse_qtype("nope"), None);
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(255), "ANY");
        assert_eq!(qtype_name(65280), "TYPE65280");
        assert_eq!(parse_range("198.51.100.7").unwrap().to_string(), "198.51.100.7/32");
        assert_eq!(parse_range("::ffff:198.51.100.0/120").unwrap().to_string(), "198.51.100.0/24");
        assert!(parse_range("198.51.100.7/24").unwrap_err().contains("198.51.100.0/24"));
        assert!(parse_range("example").is_err());
    }
}
