//! The customer emails: one subject, plain-text and HTML template per kind and locale
//! (`templates/<locale>/<kind>.subject.txt|.txt|.html`), built in and overridable file by
//! file from `mail.templates_dir`. HTML is auto-escaped, text and subject are not; a
//! broken template is reported by file and line.

use super::format::Locale;
use super::message::one_line;
use crate::mask;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// What an email is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EmailKind {
    /// Some days before the due date: amount, date, and whether the account holds enough.
    Upcoming,
    /// The pre-debit funds check found the account short: by how much, top up by when.
    BalanceLow,
    /// Receipt of a collected installment.
    DebitSucceeded,
    /// A debit did not go through: why, and the next try or what to do.
    DebitFailed,
    /// Days past due, amount overdue, how to pay.
    Overdue,
    /// Last warning before the arrears are reported to the credit bureau.
    CreditWarning,
    /// The debit mandate is not (or no longer) in force: pay another way.
    MandateNotice,
    /// A collected payment came back from the bank (returns feed): what, why, what is
    /// due again and when we try again.
    DebitReturned,
    /// The schedule was changed by the lender (a payment holiday or a new term): the new
    /// dates and amounts.
    ScheduleChanged,
}

impl EmailKind {
    pub const ALL: [EmailKind; 9] = [
        EmailKind::Upcoming,
        EmailKind::BalanceLow,
        EmailKind::DebitSucceeded,
        EmailKind::DebitFailed,
        EmailKind::Overdue,
        EmailKind::CreditWarning,
        EmailKind::MandateNotice,
        EmailKind::DebitReturned,
        EmailKind::ScheduleChanged,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EmailKind::Upcoming => "upcoming",
            EmailKind::BalanceLow => "balance_low",
            EmailKind::DebitSucceeded => "debit_succeeded",
            EmailKind::DebitFailed => "debit_failed",
            EmailKind::Overdue => "overdue",
            EmailKind::CreditWarning => "credit_warning",
            EmailKind::MandateNotice => "mandate_notice",
            EmailKind::DebitReturned => "debit_returned",
            EmailKind::ScheduleChanged => "schedule_changed",
        }
    }

    /// Context fields an email of this kind cannot do without, beyond the common ones.
    fn required(&self, ctx: &TemplateContext) -> Vec<&'static str> {
        let mut missing = Vec::new();
        let mut need = |present: bool, field: &'static str| {
            if !present {
                missing.push(field);
            }
        };
        match self {
            EmailKind::Upcoming => need(!ctx.account.is_empty(), "account"),
            EmailKind::BalanceLow => {
                need(!ctx.account.is_empty(), "account");
                need(ctx.shortfall.is_some(), "shortfall");
                need(ctx.top_up_by.is_some(), "top_up_by");
                need(ctx.top_up_by_short.is_some(), "top_up_by_short");
            }
            EmailKind::DebitSucceeded => {
                need(!ctx.account.is_empty(), "account");
                need(ctx.paid_on.is_some(), "paid_on");
                need(ctx.reference.is_some(), "reference");
            }
            EmailKind::DebitFailed => {
                need(!ctx.account.is_empty(), "account");
                need(ctx.failure.is_some(), "failure");
            }
            EmailKind::Overdue => {
                need(ctx.days_past_due.is_some(), "days_past_due");
                need(ctx.amount_overdue.is_some(), "amount_overdue");
            }
            EmailKind::CreditWarning => {
                need(ctx.days_past_due.is_some(), "days_past_due");
                need(ctx.amount_overdue.is_some(), "amount_overdue");
                need(ctx.pay_by.is_some(), "pay_by");
                need(ctx.pay_by_short.is_some(), "pay_by_short");
            }
            EmailKind::MandateNotice => {
                need(!ctx.account.is_empty(), "account");
                need(ctx.mandate_status.is_some(), "mandate_status");
            }
            EmailKind::DebitReturned => {
                need(!ctx.account.is_empty(), "account");
                need(ctx.paid_on.is_some(), "paid_on");
                need(ctx.return_reason.is_some(), "return_reason");
                need(ctx.still_due.is_some(), "still_due");
            }
            EmailKind::ScheduleChanged => {
                need(!ctx.account.is_empty(), "account");
                need(ctx.schedule_change.is_some(), "schedule_change");
                need(!ctx.schedule.is_empty(), "schedule");
                need(ctx.remaining_balance.is_some(), "remaining_balance");
                if ctx.schedule_change.as_deref() == Some("holiday") {
                    need(ctx.old_due_date.is_some(), "old_due_date");
                }
            }
        }
        missing
    }
}

impl fmt::Display for EmailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown email kind {0:?} (expected one of upcoming, balance_low, debit_succeeded, debit_failed, overdue, credit_warning, mandate_notice, debit_returned, schedule_changed)"
)]
pub struct UnknownEmailKind(pub String);

impl FromStr for EmailKind {
    type Err = UnknownEmailKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EmailKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| UnknownEmailKind(s.to_string()))
    }
}

/// Why a debit failed, in terms a customer can act on; the templates word each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DebitFailure {
    /// The funds check or the bank said the money was not there.
    InsufficientFunds,
    /// The bank refused the debit.
    Declined,
    /// The debit authorization (mandate) is missing, revoked or expired.
    MandateInvalid,
    /// Something broke between us and the bank; nothing was taken.
    Technical,
}

/// Everything a template may print, already formatted for the customer's locale (see
/// [`Locale::money`], [`Locale::date`], [`Locale::date_time`]). Optional fields are `None`
/// when they do not apply; templates test them before printing (printing a `None` is a
/// render error, never the word "none" in a customer's email).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateContext {
    pub customer_name: String,
    /// The agreement's external id, as the customer knows it.
    pub agreement_ref: String,
    pub installment_seq: u32,
    pub installment_count: u32,
    /// The installment's amount, formatted (`¥1,066.19`).
    pub amount: String,
    /// ISO code of the amounts (`CNY`).
    pub currency: String,
    /// `Saturday, 31 January 2026` / `2026年1月31日（星期六）`.
    pub due_date: String,
    /// For subjects: `31 Jan` / `1月31日`.
    pub due_date_short: String,
    /// The funding account, masked: `****3000` (set with [`TemplateContext::set_account`]).
    pub account: String,
    /// Its last four characters, for "your account ending 3000".
    pub account_ending: String,
    /// Upcoming: whether the account holds enough now; `None` when it could not be checked.
    pub funds_sufficient: Option<bool>,
    /// How much is missing, formatted.
    pub shortfall: Option<String>,
    /// Local date and time to top up by, and its short form for subjects.
    pub top_up_by: Option<String>,
    pub top_up_by_short: Option<String>,
    /// When the next debit attempt is, if there will be one.
    pub next_attempt: Option<String>,
    /// The next attempt was placed after the customer's usual payday (payday-aware retries):
    /// the failure notice says so.
    pub after_payday: bool,
    pub failure: Option<DebitFailure>,
    /// Receipt: the date the money was collected and the payment reference.
    pub paid_on: Option<String>,
    pub reference: Option<String>,
    /// What is still owed on the agreement after this payment.
    pub remaining_balance: Option<String>,
    /// Partial collection receipt: the installment's amount that was asked, and what of
    /// it is still due now (from the ledger at send time). `None` for a full payment.
    pub partial_of: Option<String>,
    pub still_due: Option<String>,
    /// Returned debit: the bank's reason code (`insufficient_funds`, `debit_disputed`,
    /// `mandate_cancelled`, `account_closed`, others); the templates word the known ones.
    pub return_reason: Option<String>,
    pub next_due_date: Option<String>,
    pub next_due_amount: Option<String>,
    pub days_past_due: Option<i64>,
    /// Everything overdue on the agreement (may be more than one installment).
    pub amount_overdue: Option<String>,
    /// Credit warning: pay by this local date and time to avoid the report.
    pub pay_by: Option<String>,
    pub pay_by_short: Option<String>,
    pub lender_name: String,
    pub support_contact: Option<String>,
    pub payment_url: Option<String>,
    /// Where the installment stands on the customer's local today: `pre_due`, `due` or
    /// `overdue`; the wording follows it.
    pub installment_state: String,
    /// Unpaid amounts of earlier installments that are past due (arrears), formatted;
    /// `None` when there are none.
    pub arrears: Option<String>,
    /// Open charges (late fees), itemized.
    pub charges: Vec<ChargeLine>,
    /// Everything needed to be up to date: this installment, arrears and charges; set when
    /// it differs from `amount`.
    pub total_due: Option<String>,
    /// Mandate notice: `revoked` or `pending`.
    pub mandate_status: Option<String>,
    /// Schedule change: `holiday` or `term`.
    pub schedule_change: Option<String>,
    /// Schedule change: the first due date of the old schedule that no longer holds.
    pub old_due_date: Option<String>,
    /// Schedule change: every payment still to come, in order (set with
    /// [`TemplateContext::set_schedule`]).
    pub schedule: Vec<ScheduleEntry>,
    /// The same as `[date, amount]` pairs, for the HTML `ui.facts` table.
    pub schedule_rows: Vec<[String; 2]>,
    /// Rendered as one section of a merged email: no greeting, no footer.
    pub in_digest: bool,
}

/// One message rendered as a section of a merged email (see [`Templates::render_digest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestPart {
    pub subject: String,
    /// The text part, without greeting and footer.
    pub text: String,
    /// The HTML `content` block, already escaped.
    pub html: String,
}

/// One payment of a (changed) schedule as an email lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleEntry {
    pub due_date: String,
    pub amount: String,
}

/// One open charge as an email itemizes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeLine {
    /// `late_fee`.
    pub kind: String,
    /// The installment it was charged on.
    pub installment_seq: u32,
    pub amount: String,
}

impl TemplateContext {
    /// Sets `account` (masked, `****3000`) and `account_ending` (`3000`) from the full
    /// account reference, which itself never reaches a template.
    pub fn set_account(&mut self, reference: &str) {
        self.account = mask::account(reference);
        self.account_ending = match self.account.strip_prefix("****") {
            Some(tail) if !tail.is_empty() => tail.to_string(),
            _ => self.account.clone(),
        };
    }

    /// Sets `schedule` and `schedule_rows` from the payments still to come.
    pub fn set_schedule(&mut self, entries: Vec<ScheduleEntry>) {
        self.schedule_rows = entries
            .iter()
            .map(|e| [e.due_date.clone(), e.amount.clone()])
            .collect();
        self.schedule = entries;
    }

    fn missing_fields(&self, kind: EmailKind) -> Vec<&'static str> {
        let mut missing = Vec::new();
        for (present, field) in [
            (!self.agreement_ref.is_empty(), "agreement_ref"),
            (self.installment_seq > 0, "installment_seq"),
            (self.installment_count > 0, "installment_count"),
            (!self.amount.is_empty(), "amount"),
            (!self.due_date.is_empty(), "due_date"),
            (!self.due_date_short.is_empty(), "due_date_short"),
            (!self.lender_name.is_empty(), "lender_name"),
        ] {
            if !present {
                missing.push(field);
            }
        }
        missing.extend(kind.required(self));
        missing
    }
}

/// A rendered email: a one-line subject, the plain text and the HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A template failed to compile or render; `file` is the built-in path
    /// (`templates/en/upcoming.html`) or the override's full path.
    #[error("{file}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    #[error("cannot read template {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "{path}: not a template repayd knows; expected <locale>/<kind>.subject.txt, .txt or .html with locale {} and kind one of {}, or a partial whose name starts with _",
        LOCALES,
        KINDS
    )]
    UnknownOverride { path: String },
    #[error("a {kind} email needs {} in its context", .fields.join(", "))]
    MissingFields {
        kind: EmailKind,
        fields: Vec<&'static str>,
    },
}

const LOCALES: &str = "en or zh-CN";
const KINDS: &str = "upcoming, balance_low, debit_succeeded, debit_failed, overdue, credit_warning, mandate_notice, debit_returned, schedule_changed";

macro_rules! builtin_templates {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../templates/", $path)))),*]
    };
}

/// Every built-in template, by its path under `templates/`.
const BUILTIN: &[(&str, &str)] = builtin_templates![
    "_macros.html",
    "en/_layout.html",
    "en/_footer.txt",
    "en/upcoming.subject.txt",
    "en/upcoming.txt",
    "en/upcoming.html",
    "en/balance_low.subject.txt",
    "en/balance_low.txt",
    "en/balance_low.html",
    "en/debit_succeeded.subject.txt",
    "en/debit_succeeded.txt",
    "en/debit_succeeded.html",
    "en/debit_failed.subject.txt",
    "en/debit_failed.txt",
    "en/debit_failed.html",
    "en/overdue.subject.txt",
    "en/overdue.txt",
    "en/overdue.html",
    "en/credit_warning.subject.txt",
    "en/credit_warning.txt",
    "en/credit_warning.html",
    "en/mandate_notice.subject.txt",
    "en/mandate_notice.txt",
    "en/mandate_notice.html",
    "en/debit_returned.subject.txt",
    "en/debit_returned.txt",
    "en/debit_returned.html",
    "en/schedule_changed.subject.txt",
    "en/schedule_changed.txt",
    "en/schedule_changed.html",
    "en/_ledger.txt",
    "en/_ledger.html",
    "zh-CN/_layout.html",
    "zh-CN/_footer.txt",
    "zh-CN/upcoming.subject.txt",
    "zh-CN/upcoming.txt",
    "zh-CN/upcoming.html",
    "zh-CN/balance_low.subject.txt",
    "zh-CN/balance_low.txt",
    "zh-CN/balance_low.html",
    "zh-CN/debit_succeeded.subject.txt",
    "zh-CN/debit_succeeded.txt",
    "zh-CN/debit_succeeded.html",
    "zh-CN/debit_failed.subject.txt",
    "zh-CN/debit_failed.txt",
    "zh-CN/debit_failed.html",
    "zh-CN/overdue.subject.txt",
    "zh-CN/overdue.txt",
    "zh-CN/overdue.html",
    "zh-CN/credit_warning.subject.txt",
    "zh-CN/credit_warning.txt",
    "zh-CN/credit_warning.html",
    "zh-CN/mandate_notice.subject.txt",
    "zh-CN/mandate_notice.txt",
    "zh-CN/mandate_notice.html",
    "zh-CN/debit_returned.subject.txt",
    "zh-CN/debit_returned.txt",
    "zh-CN/debit_returned.html",
    "zh-CN/schedule_changed.subject.txt",
    "zh-CN/schedule_changed.txt",
    "zh-CN/schedule_changed.html",
    "zh-CN/_ledger.txt",
    "zh-CN/_ledger.html",
    "en/digest.subject.txt",
    "en/digest.txt",
    "en/digest.html",
    "zh-CN/digest.subject.txt",
    "zh-CN/digest.txt",
    "zh-CN/digest.html",
];

fn template_name(locale: Locale, kind: EmailKind, part: &str) -> String {
    format!("{}/{}.{}", locale.template_dir(), kind.as_str(), part)
}

/// The compiled templates. Cheap to share (`Send + Sync`); load once at start-up.
pub struct Templates {
    env: Environment<'static>,
    /// Template name -> the file it came from, for error messages.
    files: Arc<HashMap<String, String>>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut overrides: Vec<&String> = self
            .files
            .values()
            .filter(|f| !f.starts_with("templates/"))
            .collect();
        overrides.sort();
        f.debug_struct("Templates")
            .field("overrides", &overrides)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, with any file of the same relative path in `templates_dir`
    /// in its place. Partials (`_name.html`, `_name.txt`) in the directory are added; any
    /// other unknown `.txt` or `.html` file is an error, so a misspelt override cannot be
    /// silently ignored. Every template is compiled now: a syntax error fails here.
    pub fn load(templates_dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut sources: BTreeMap<String, (Cow<'static, str>, String)> = BUILTIN
            .iter()
            .map(|(name, source)| {
                (
                    name.to_string(),
                    (Cow::Borrowed(*source), format!("templates/{name}")),
                )
            })
            .collect();
        if let Some(dir) = templates_dir {
            for (name, path) in override_files(dir)? {
                let is_partial = name.rsplit('/').next().is_some_and(|f| f.starts_with('_'));
                if !sources.contains_key(&name) && !is_partial {
                    return Err(TemplateError::UnknownOverride {
                        path: path.display().to_string(),
                    });
                }
                let text = std::fs::read_to_string(&path).map_err(|e| TemplateError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                sources.insert(name, (Cow::Owned(text), path.display().to_string()));
            }
        }
        let files: Arc<HashMap<String, String>> = Arc::new(
            sources
                .iter()
                .map(|(name, (_, file))| (name.clone(), file.clone()))
                .collect(),
        );
        let mut env = environment(files.keys().cloned().collect());
        for (name, (source, _)) in sources {
            env.add_template_owned(name, source.into_owned())
                .map_err(|e| template_error(&files, e))?;
        }
        Ok(Templates { env, files })
    }

    /// Renders an email of `kind` in the locale that fits the customer's locale string.
    pub fn render(
        &self,
        kind: EmailKind,
        locale: &str,
        ctx: &TemplateContext,
    ) -> Result<RenderedEmail, TemplateError> {
        self.render_in(kind, Locale::from_tag(locale), ctx)
    }

    /// Renders an email of `kind` in `locale`.
    pub fn render_in(
        &self,
        kind: EmailKind,
        locale: Locale,
        ctx: &TemplateContext,
    ) -> Result<RenderedEmail, TemplateError> {
        let missing = ctx.missing_fields(kind);
        if !missing.is_empty() {
            return Err(TemplateError::MissingFields {
                kind,
                fields: missing,
            });
        }
        let value = Value::from_serialize(ctx);
        let subject_name = template_name(locale, kind, "subject.txt");
        let subject = one_line(&self.render_one(&subject_name, &value)?);
        if subject.is_empty() {
            return Err(TemplateError::Template {
                file: self.file_of(&subject_name),
                line: None,
                reason: "renders to an empty subject".into(),
            });
        }
        let text = tidy_text(&self.render_one(&template_name(locale, kind, "txt"), &value)?);
        let html = self.render_one(&template_name(locale, kind, "html"), &value)?;
        Ok(RenderedEmail {
            subject,
            text,
            html,
        })
    }

    /// Renders an email of `kind` as one section of a merged email: its subject, its text
    /// without greeting and footer, and its HTML `content` block.
    pub fn render_part(
        &self,
        kind: EmailKind,
        locale: Locale,
        ctx: &TemplateContext,
    ) -> Result<DigestPart, TemplateError> {
        let mut ctx = ctx.clone();
        ctx.in_digest = true;
        let rendered = self.render_in(kind, locale, &ctx)?;
        let name = template_name(locale, kind, "html");
        let html = self
            .env
            .get_template(&name)
            .and_then(|t| t.render_captured(Value::from_serialize(&ctx)))
            .and_then(|mut captured| captured.with_state_mut(|s| s.render_block("content")))
            .map_err(|e| template_error(&self.files, e))?;
        Ok(DigestPart {
            subject: rendered.subject,
            text: rendered.text,
            html,
        })
    }

    /// One email that carries several messages due together for one customer: a short
    /// greeting, then each message under its own subject. `base` gives the customer's
    /// name and the lender's details; its `agreement_ref` names every agreement concerned.
    pub fn render_digest(
        &self,
        locale: Locale,
        base: &TemplateContext,
        parts: &[DigestPart],
    ) -> Result<RenderedEmail, TemplateError> {
        let parts_value: Vec<Value> = parts
            .iter()
            .map(|p| {
                minijinja::context! {
                    subject => p.subject.clone(),
                    text => p.text.trim_end().to_string(),
                    html => Value::from_safe_string(p.html.clone()),
                }
            })
            .collect();
        let value = minijinja::context! {
            count => parts.len(),
            parts => parts_value,
            ..Value::from_serialize(base)
        };
        let name = |part: &str| format!("{}/digest.{part}", locale.template_dir());
        let subject = one_line(&self.render_one(&name("subject.txt"), &value)?);
        let text = tidy_text(&self.render_one(&name("txt"), &value)?);
        let html = self.render_one(&name("html"), &value)?;
        Ok(RenderedEmail {
            subject,
            text,
            html,
        })
    }

    /// Renders every kind in every locale with sample data covering each branch the
    /// built-in templates have, and a merged email of them: run at start-up and by
    /// `check-config`.
    pub fn check_all(&self) -> Result<(), TemplateError> {
        for locale in Locale::ALL {
            let mut parts = Vec::new();
            for kind in EmailKind::ALL {
                for ctx in samples(kind, locale) {
                    self.render_in(kind, locale, &ctx)?;
                }
                if let Some(ctx) = samples(kind, locale).first() {
                    parts.push(self.render_part(kind, locale, ctx)?);
                }
            }
            let base = samples(EmailKind::Upcoming, locale).remove(0);
            self.render_digest(locale, &base, &parts)?;
        }
        Ok(())
    }

    fn render_one(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| template_error(&self.files, e))
    }

    fn file_of(&self, name: &str) -> String {
        self.files
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

fn environment(known: HashSet<String>) -> Environment<'static> {
    let mut env = Environment::new();
    // A typo in a template is an error at check time, not an empty gap in an email.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_debug(false);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "printed a value that is not set for this email; test it with {% if ... %} first",
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
    // `{% extends "_layout.html" %}` means the layout of the same locale when there is
    // one, else the shared file at the top (`_macros.html`); a name with a `/` is taken
    // as is.
    env.set_path_join_callback(move |name, parent| {
        if name.contains('/') {
            return Cow::Borrowed(name);
        }
        match parent.rsplit_once('/') {
            Some((dir, _)) => {
                let sibling = format!("{dir}/{name}");
                if known.contains(&sibling) {
                    Cow::Owned(sibling)
                } else {
                    Cow::Borrowed(name)
                }
            }
            None => Cow::Borrowed(name),
        }
    });
    env
}

/// The `.txt` and `.html` files directly in `dir` and in its subdirectories, by their
/// relative path with `/`. Hidden files (editor swap files) and other extensions are left
/// alone.
fn override_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, TemplateError> {
    let read_err = |path: &Path, e: std::io::Error| TemplateError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut found = Vec::new();
    let mut dirs = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, path)) = dirs.pop() {
        let entries = std::fs::read_dir(&path).map_err(|e| read_err(&path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| read_err(&path, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(|e| read_err(&entry.path(), e))?;
            let rel = format!("{prefix}{name}");
            if file_type.is_dir() {
                // One level: locale directories.
                if prefix.is_empty() {
                    dirs.push((format!("{rel}/"), entry.path()));
                }
            } else if name.ends_with(".txt") || name.ends_with(".html") {
                found.push((rel, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn template_error(files: &HashMap<String, String>, e: Error) -> TemplateError {
    let file = match e.name() {
        Some(name) => files.get(name).cloned().unwrap_or_else(|| name.to_string()),
        None => "template".to_string(),
    };
    let mut reason = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    // A failure inside an included template or macro names the outer one; keep the cause.
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        reason.push_str(&format!("; {cause}"));
        source = cause.source();
    }
    TemplateError::Template {
        file,
        line: e.line(),
        reason,
    }
}

/// Plain text as people write it: no trailing spaces, at most one blank line in a row,
/// no blank lines at the start, one newline at the end.
fn tidy_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0;
    for line in raw.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Sample contexts for `kind`: one per branch of the built-in templates, formatted the way
/// the engine formats real ones.
pub fn samples(kind: EmailKind, locale: Locale) -> Vec<TemplateContext> {
    use crate::domain::{Currency, Money};
    use chrono::{NaiveDate, NaiveDateTime};
    let cny = Currency::parse("CNY").expect("CNY is a currency");
    let money = |minor: i64| Some(locale.money(&Money::from_minor(minor, cny)));
    let date = |m: u32, d: u32| NaiveDate::from_ymd_opt(2026, m, d).expect("valid date");
    let at = |m: u32, d: u32, h: u32, min: u32| -> NaiveDateTime {
        date(m, d).and_hms_opt(h, min, 0).expect("valid time")
    };
    let mut base = TemplateContext {
        customer_name: match locale {
            Locale::En | Locale::EnUs => "Alex Chen".into(),
            Locale::ZhCn => "陈明".into(),
        },
        agreement_ref: "AGR-2025-0042".into(),
        installment_seq: 3,
        installment_count: 12,
        amount: locale.money(&Money::from_minor(106_619, cny)),
        currency: "CNY".into(),
        due_date: locale.date(date(1, 31)),
        due_date_short: locale.date_short(date(1, 31)),
        lender_name: "Example Finance".into(),
        support_contact: Some("help@example.com, 400-800-1234".into()),
        payment_url: Some("https://pay.example.com/a/AGR-2025-0042".into()),
        installment_state: "pre_due".into(),
        ..TemplateContext::default()
    };
    base.set_account("6222020200113000");
    // `with` keeps every optional detail; `bare` drops the lender's optional contact
    // details and the customer's name, so the fallbacks get rendered too.
    let with = |f: &dyn Fn(&mut TemplateContext)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let bare = |f: &dyn Fn(&mut TemplateContext)| {
        let mut c = base.clone();
        c.support_contact = None;
        c.payment_url = None;
        c.customer_name = String::new();
        f(&mut c);
        c
    };
    let top_up = |c: &mut TemplateContext, when: NaiveDateTime| {
        c.shortfall = money(12_050);
        c.top_up_by = Some(locale.date_time(when));
        c.top_up_by_short = Some(locale.date_time_short(when));
    };
    let paid = |c: &mut TemplateContext| {
        c.paid_on = Some(locale.date(date(1, 31)));
        c.reference = Some("PAY-7F3K2Q".into());
    };
    // Arrears of an earlier installment and its late fee, itemized.
    let ledger = |c: &mut TemplateContext| {
        c.arrears = money(106_619);
        c.charges = vec![ChargeLine {
            kind: "late_fee".into(),
            installment_seq: 2,
            amount: money(2_500).unwrap_or_default(),
        }];
        c.total_due = money(215_738);
    };
    let pay_by = |c: &mut TemplateContext| {
        c.pay_by = Some(locale.date_time(at(4, 20, 23, 59)));
        c.pay_by_short = Some(locale.date_short(date(4, 20)));
    };
    match kind {
        EmailKind::Upcoming => vec![
            with(&|c| c.funds_sufficient = Some(true)),
            with(&|c| {
                c.funds_sufficient = Some(false);
                top_up(c, at(1, 30, 18, 0));
            }),
            bare(&|c| c.funds_sufficient = Some(false)),
            bare(&|_| {}),
            with(&|c| {
                c.funds_sufficient = Some(true);
                ledger(c);
            }),
        ],
        EmailKind::BalanceLow => vec![
            with(&|c| {
                top_up(c, at(1, 31, 5, 0));
                c.next_attempt = Some(locale.date_time(at(1, 31, 6, 0)));
            }),
            bare(&|c| top_up(c, at(1, 31, 5, 0))),
            with(&|c| {
                top_up(c, at(1, 31, 5, 0));
                ledger(c);
            }),
        ],
        EmailKind::DebitSucceeded => vec![
            with(&|c| {
                paid(c);
                c.remaining_balance = money(959_571);
                c.next_due_date = Some(locale.date(date(2, 28)));
                c.next_due_amount = money(106_619);
            }),
            bare(&|c| {
                paid(c);
                c.installment_seq = 12;
                c.remaining_balance = money(0);
            }),
            bare(&|c| paid(c)),
            // A partial collection: what was taken of what was asked, the rest and the
            // next try.
            with(&|c| {
                paid(c);
                c.amount = money(80_000).unwrap_or_default();
                c.partial_of = money(106_619);
                c.still_due = money(26_619);
                c.next_attempt = Some(locale.date_time(at(2, 1, 6, 0)));
            }),
            bare(&|c| {
                paid(c);
                c.amount = money(80_000).unwrap_or_default();
                c.partial_of = money(106_619);
                c.still_due = money(26_619);
            }),
        ],
        EmailKind::DebitFailed => [
            DebitFailure::InsufficientFunds,
            DebitFailure::Declined,
            DebitFailure::MandateInvalid,
            DebitFailure::Technical,
        ]
        .into_iter()
        .flat_map(|failure| {
            [
                with(&|c| {
                    c.failure = Some(failure);
                    c.shortfall = money(12_050);
                    c.next_attempt = Some(locale.date_time(at(2, 1, 6, 0)));
                }),
                bare(&|c| c.failure = Some(failure)),
                with(&|c| {
                    c.failure = Some(failure);
                    c.installment_state = "overdue".into();
                    ledger(c);
                }),
            ]
        })
        // A retry placed after the customer's usual payday (payday-aware retries).
        .chain(std::iter::once(with(&|c| {
            c.failure = Some(DebitFailure::InsufficientFunds);
            c.shortfall = money(12_050);
            c.next_attempt = Some(locale.date_time(at(2, 10, 6, 0)));
            c.after_payday = true;
        })))
        .collect(),
        EmailKind::Overdue => vec![
            with(&|c| {
                c.days_past_due = Some(1);
                c.amount_overdue = money(106_619);
                c.next_attempt = Some(locale.date_time(at(2, 3, 6, 0)));
            }),
            with(&|c| {
                c.days_past_due = Some(45);
                c.amount_overdue = money(213_238);
            }),
            bare(&|c| {
                c.days_past_due = Some(10);
                c.amount_overdue = money(106_619);
            }),
            with(&|c| {
                c.installment_state = "overdue".into();
                c.days_past_due = Some(12);
                c.amount_overdue = money(215_738);
                ledger(c);
            }),
        ],
        EmailKind::CreditWarning => vec![
            with(&|c| {
                c.days_past_due = Some(80);
                c.amount_overdue = money(319_857);
                pay_by(c);
            }),
            bare(&|c| {
                c.days_past_due = Some(1);
                c.amount_overdue = money(106_619);
                pay_by(c);
            }),
        ],
        EmailKind::DebitReturned => ["insufficient_funds", "debit_disputed", "refer_to_payer"]
            .into_iter()
            .flat_map(|reason| {
                [
                    with(&|c| {
                        paid(c);
                        c.return_reason = Some(reason.into());
                        c.still_due = money(106_619);
                        c.installment_state = "overdue".into();
                        c.next_attempt = Some(locale.date_time(at(2, 6, 6, 0)));
                    }),
                    bare(&|c| {
                        paid(c);
                        c.return_reason = Some(reason.into());
                        c.still_due = money(106_619);
                        c.installment_state = "overdue".into();
                        ledger(c);
                    }),
                ]
            })
            .collect(),
        EmailKind::ScheduleChanged => {
            let entries = |first: u32, n: u32| {
                (0..n)
                    .map(|k| ScheduleEntry {
                        due_date: locale.date(date(first + k, 28)),
                        amount: money(106_619).unwrap_or_default(),
                    })
                    .collect::<Vec<_>>()
            };
            vec![
                with(&|c| {
                    c.schedule_change = Some("holiday".into());
                    c.old_due_date = Some(locale.date(date(1, 28)));
                    c.due_date = locale.date(date(3, 28));
                    c.due_date_short = locale.date_short(date(3, 28));
                    c.set_schedule(entries(3, 4));
                    c.remaining_balance = money(426_476);
                }),
                bare(&|c| {
                    c.schedule_change = Some("term".into());
                    c.set_schedule(entries(1, 9));
                    c.remaining_balance = money(959_571);
                    c.arrears = money(106_619);
                }),
            ]
        }
        EmailKind::MandateNotice => ["revoked", "pending"]
            .into_iter()
            .flat_map(|status| {
                [
                    with(&|c| c.mandate_status = Some(status.into())),
                    bare(&|c| {
                        c.mandate_status = Some(status.into());
                        c.installment_state = "overdue".into();
                        ledger(c);
                    }),
                ]
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
