//! Reading agreement files (CSV, JSON): validated as a whole before anything is written.
//! The formats are documented in `docs/import-format.md`.
//!
//! An import runs in three steps, streaming the file so memory does not grow with it:
//! whatever must be remembered across records (ids, content hashes, customers, accounts,
//! and later the decisions and database ids) lives in a scratch index, a private SQLite
//! file in a temporary directory (`store::import_scratch`), removed at the end. Memory is
//! bounded by a batch of records, whatever the file's size.
//!
//! 1. **Read**: every record is checked on its own (fields, terms, the schedule generated
//!    or the explicit one checked) and against the others (duplicate agreement ids, one
//!    customer or account given with two sets of details), a batch at a time against the
//!    scratch index. Any problem: the file is rejected, every problem named, nothing
//!    written.
//! 2. **Plan**: the file is compared with the database, page by page: new, unchanged
//!    (same content hash) or changed agreements; a changed one is refused unless
//!    `--update` is given and nothing has been paid or debited on it. Any refusal:
//!    rejected as in step 1. The decisions go to the scratch index.
//! 3. **Write**: customers and accounts, then the file is read again and agreements are
//!    written in batched transactions (each agreement with its installments and event).
//!
//! Why batches and not one transaction: on SQLite a single long write transaction would
//! hold the database's one write lock for the whole import and starve a running daemon
//! (its writers give up after the busy timeout). Validation is complete before the first
//! write, so only a database failure can stop an import half-way; it then says which
//! batch failed and what was committed, and running the same import again finishes the
//! job, because what was committed is now "unchanged".

mod record;
mod source;
mod validate;

pub use record::{Field, Location, RowError};
pub use validate::{ValidAgreement, normalize_locale};

use crate::clock::{Clock, to_epoch_ms};
use crate::config::ScheduleDefaults;
use crate::domain::HolidayCalendar;
use crate::store::agreements::{
    AccountWrite, AgreementWrite, CustomerWrite, NewAgreement, NewCustomer, NewFundingAccount,
};
use crate::store::import_scratch::{
    AgreementDecision, ImportScratch, ScratchAccount, ScratchAgreement, ScratchCustomer,
};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use validate::Rules;

/// Agreements per write transaction unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;

/// sysexits.h codes an import ends with.
pub mod exit {
    /// EX_DATAERR: the file is bad (or conflicts with the database); nothing was written.
    pub const DATA_ERR: u8 = 65;
    /// EX_NOINPUT: the file cannot be opened or its format cannot be told.
    pub const NO_INPUT: u8 = 66;
    /// EX_TEMPFAIL: the database failed; running the import again finishes it.
    pub const TEMP_FAIL: u8 = 75;
    /// EX_SOFTWARE: a bug.
    pub const SOFTWARE: u8 = 70;
    /// EX_CONFIG: the schedule defaults (holiday calendar) cannot be loaded.
    pub const CONFIG: u8 = 78;
}

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One row per agreement, with a header row.
    Csv,
    /// A top-level array of agreement objects.
    Json,
}

impl Format {
    /// The format a file's extension names (`.csv`, `.json`), any case.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Replace agreements whose content changed, as long as nothing was paid or debited.
    pub update: bool,
    /// Validate and compare with the database; write nothing.
    pub dry_run: bool,
    /// Agreements per write transaction (at least 1).
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            update: false,
            dry_run: false,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    pub dry_run: bool,
    /// Records in the file.
    pub records: u64,
    pub agreements_new: u64,
    pub agreements_unchanged: u64,
    pub agreements_updated: u64,
    pub installments_written: u64,
    pub customers_new: u64,
    pub customers_updated: u64,
    pub customers_unchanged: u64,
    pub accounts_new: u64,
    pub accounts_updated: u64,
    pub accounts_unchanged: u64,
    /// Not-yet-started debit attempts of updated agreements, deleted for re-planning.
    pub debit_attempts_removed: u64,
    /// Reminders of updated agreements, deleted for re-planning.
    pub reminders_removed: u64,
    /// Agreement write transactions committed.
    pub batches: u64,
    /// Customers whose funding order (`funding_priority`) was set, or was already so.
    pub funding_orders_set: u64,
    pub funding_orders_unchanged: u64,
    /// Changes the file asks for that were not made (a mandate's status or reference, or
    /// a funding order, without `--update`; a revoked mandate never restored), one line
    /// each naming where.
    pub refused_changes: Vec<String>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would be written"
        } else {
            "written"
        };
        writeln!(
            f,
            "agreements: {} new, {} unchanged, {} updated; {} installments {verb}",
            self.agreements_new,
            self.agreements_unchanged,
            self.agreements_updated,
            self.installments_written
        )?;
        writeln!(
            f,
            "customers: {} new, {} updated, {} unchanged",
            self.customers_new, self.customers_updated, self.customers_unchanged
        )?;
        write!(
            f,
            "funding accounts: {} new, {} updated, {} unchanged",
            self.accounts_new, self.accounts_updated, self.accounts_unchanged
        )?;
        if self.funding_orders_set + self.funding_orders_unchanged > 0 {
            write!(
                f,
                "\nfunding orders: {} {}, {} unchanged",
                self.funding_orders_set,
                if self.dry_run { "to set" } else { "set" },
                self.funding_orders_unchanged
            )?;
        }
        if self.debit_attempts_removed + self.reminders_removed > 0 {
            write!(
                f,
                "\nof updated agreements: {} planned debit attempts and {} reminders removed \
                 (the planner plans them again for the new schedule)",
                self.debit_attempts_removed, self.reminders_removed
            )?;
        }
        if !self.refused_changes.is_empty() {
            write!(
                f,
                "\nrefused changes ({}), kept as they are:",
                self.refused_changes.len()
            )?;
            for refused in &self.refused_changes {
                write!(f, "\n  {refused}")?;
            }
        }
        if self.dry_run {
            write!(f, "\ndry run: nothing was written")?;
        }
        Ok(())
    }
}

/// How far a write got before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub customers: u64,
    pub accounts: u64,
    pub agreement_batches: u64,
    pub agreements: u64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "committed before it and kept: {} customers, {} funding accounts, {} agreements in {} batches",
            self.customers, self.accounts, self.agreements, self.agreement_batches
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot tell the format of {}: name it .csv or .json, or pass --format", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("schedule defaults ([schedule] in the configuration): {0}")]
    Defaults(String),
    /// The file (or its relation to the database) is bad. Nothing was written. Displays
    /// as one line per problem, in file order.
    #[error("{}", RowErrors(.0))]
    Invalid(Vec<RowError>),
    #[error("database error before anything was written: {0}")]
    Store(#[source] Box<StoreError>),
    /// The import's own scratch index (a temporary SQLite file) failed, e.g. a full disk.
    #[error("the import's scratch index (a temporary file under $TMPDIR) failed: {0}")]
    Scratch(#[source] Box<StoreError>),
    #[error(
        "writing {stage} batch {batch}{} failed: {cause}; {progress}; \
         running the same import again finishes it",
        first.map(|l| format!(" (from {l})")).unwrap_or_default()
    )]
    WriteFailed {
        stage: &'static str,
        batch: u64,
        first: Option<Location>,
        progress: Progress,
        cause: Box<StoreError>,
    },
    #[error(
        "{} changed while it was being imported (at {at}); {progress}; run the import again",
        path.display()
    )]
    FileChanged {
        path: PathBuf,
        at: Location,
        progress: Progress,
    },
    /// A bug: a task of the import failed.
    #[error("import failed: {0}")]
    Internal(String),
}

impl ImportError {
    /// The process exit code for this error (sysexits.h, see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            ImportError::Invalid(_) => exit::DATA_ERR,
            ImportError::Unreadable { .. } | ImportError::UnknownFormat { .. } => exit::NO_INPUT,
            ImportError::Defaults(_) => exit::CONFIG,
            ImportError::Store(_)
            | ImportError::Scratch(_)
            | ImportError::WriteFailed { .. }
            | ImportError::FileChanged { .. } => exit::TEMP_FAIL,
            ImportError::Internal(_) => exit::SOFTWARE,
        }
    }

    /// The problems, for [`ImportError::Invalid`].
    pub fn row_errors(&self) -> &[RowError] {
        match self {
            ImportError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

struct RowErrors<'a>(&'a [RowError]);

impl fmt::Display for RowErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Imports the agreements in `path` (format from `format`, else from the extension).
/// Schedules generated from terms use `defaults` where a record leaves rounding,
/// remainder or business-day rule out; instants come from `clock`.
pub async fn import_file(
    store: &Store,
    path: &Path,
    format: Option<Format>,
    options: &ImportOptions,
    defaults: &ScheduleDefaults,
    clock: &dyn Clock,
) -> Result<ImportSummary, ImportError> {
    let format =
        format
            .or_else(|| Format::from_path(path))
            .ok_or_else(|| ImportError::UnknownFormat {
                path: path.to_path_buf(),
            })?;
    let rules = Arc::new(rules_for(defaults, format)?);
    let batch_size = options.batch_size.max(1);
    let now_ms = to_epoch_ms(clock.now());

    let scratch = Arc::new(ImportScratch::open().await.map_err(scratch_failed)?);
    let result = import_with_index(store, path, rules, options, batch_size, now_ms, &scratch).await;
    if let Ok(scratch) = Arc::try_unwrap(scratch) {
        scratch.close().await;
    }
    result
}

async fn import_with_index(
    store: &Store,
    path: &Path,
    rules: Arc<Rules>,
    options: &ImportOptions,
    batch_size: usize,
    now_ms: i64,
    scratch: &Arc<ImportScratch>,
) -> Result<ImportSummary, ImportError> {
    let format = rules.format;
    let index = {
        let path = path.to_path_buf();
        let rules = Arc::clone(&rules);
        let scratch = Arc::clone(scratch);
        let runtime = tokio::runtime::Handle::current();
        run_blocking(move || read_and_check(&path, &rules, &scratch, &runtime)).await?
    };
    let mut errors = index.errors;
    for (owner, priority, first, last) in
        scratch.priority_clashes().await.map_err(scratch_failed)?
    {
        errors.push(RowError::new(
            location_from_code(last),
            Field::FundingPriority.name(format),
            format!(
                "customer {owner} has funding priority {priority} twice (also at {}): each of \
                 a customer's accounts needs its own place in the order",
                location_from_code(first)
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }

    let mut summary = plan(store, scratch, index.records, options, format).await?;
    summary.dry_run = options.dry_run;
    if options.dry_run {
        funding_orders(store, scratch, options, path, now_ms, &mut summary).await?;
        tracing::info!(
            new = summary.agreements_new,
            unchanged = summary.agreements_unchanged,
            updated = summary.agreements_updated,
            "import checked (dry run, nothing written)"
        );
        return Ok(summary);
    }

    let mut progress = Progress::default();
    write_parties(store, scratch, batch_size, now_ms, &mut progress).await?;
    funding_orders(store, scratch, options, path, now_ms, &mut summary).await?;
    if summary.agreements_new + summary.agreements_updated == 0 {
        // Nothing to write: no need to read the file a second time.
        tracing::info!(
            unchanged = summary.agreements_unchanged,
            "import committed: no new or changed agreements"
        );
        return Ok(summary);
    }
    let written = write_agreements(
        store,
        path,
        rules,
        scratch,
        index.records,
        batch_size,
        now_ms,
        &mut progress,
    )
    .await?;
    summary.installments_written = written.installments;
    summary.debit_attempts_removed = written.debit_attempts_removed;
    summary.reminders_removed = written.reminders_removed;
    summary.batches = progress.agreement_batches;
    tracing::info!(
        new = summary.agreements_new,
        unchanged = summary.agreements_unchanged,
        updated = summary.agreements_updated,
        installments = summary.installments_written,
        batches = summary.batches,
        "import committed"
    );
    Ok(summary)
}

fn rules_for(defaults: &ScheduleDefaults, format: Format) -> Result<Rules, ImportError> {
    let (calendar, calendar_name) = match &defaults.calendar {
        Some(path) => {
            let cal =
                HolidayCalendar::load(path).map_err(|e| ImportError::Defaults(e.to_string()))?;
            let name = cal.name.clone();
            (cal, Some(name))
        }
        None => (HolidayCalendar::default(), None),
    };
    Ok(Rules {
        format,
        rounding: defaults.rounding,
        remainder: defaults.remainder,
        business_day: defaults.business_day,
        calendar,
        calendar_name,
    })
}

/// Runs file work off the async threads (reading and validating are blocking and CPU).
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImportError> + Send + 'static,
) -> Result<T, ImportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImportError::Internal(format!("the file reader task failed: {e}")))?
}

fn invalid(mut errors: Vec<RowError>) -> ImportError {
    // Stable: problems of one row keep the order in which its fields were checked.
    errors.sort_by_key(|e| e.row);
    ImportError::Invalid(errors)
}

fn unreadable(path: &Path, e: std::io::Error) -> ImportError {
    ImportError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn scratch_failed(e: StoreError) -> ImportError {
    ImportError::Scratch(Box::new(e))
}

/// A location as the scratch index stores it: 0 the file, odd a CSV line, even a JSON item.
fn location_code(at: Location) -> i64 {
    match at {
        Location::File => 0,
        Location::Line(n) => (n as i64) * 2 + 1,
        Location::Item(n) => (n as i64) * 2 + 2,
    }
}

fn location_from_code(code: i64) -> Location {
    match code {
        c if c <= 0 => Location::File,
        c if c % 2 == 1 => Location::Line(((c - 1) / 2) as u64),
        c => Location::Item(((c - 2) / 2) as u64),
    }
}

/// Records checked per round trip to the scratch index in step 1.
const INDEX_BATCH: usize = 2_000;

/// What step 1 keeps in memory: the count and the problems. Everything else it learns
/// (ids, hashes, customers, accounts) goes to the scratch index.
#[derive(Default)]
struct FileIndex {
    records: u64,
    errors: Vec<RowError>,
}

/// What the cross-record checks need of one record.
struct Sighting {
    location: Location,
    agreement_id: Option<String>,
    content_hash: Option<String>,
    installments: u64,
    customer: Option<NewCustomer>,
    account: Option<(NewFundingAccount, String)>,
    funding_priority: Option<i64>,
}

fn read_and_check(
    path: &Path,
    rules: &Rules,
    scratch: &ImportScratch,
    runtime: &tokio::runtime::Handle,
) -> Result<FileIndex, ImportError> {
    let mut index = FileIndex::default();
    let mut pending: Vec<Sighting> = Vec::with_capacity(INDEX_BATCH);
    let mut failure: Option<StoreError> = None;
    let format = rules.format;
    let problems = source::read(path, format, &mut |raw| {
        let c = validate::check(&raw, rules);
        index.records += 1;
        index.errors.extend(c.errors);
        pending.push(Sighting {
            location: c.location,
            agreement_id: c.agreement_id,
            installments: c
                .agreement
                .as_ref()
                .map_or(0, |a| a.installments.len() as u64),
            content_hash: c.agreement.map(|a| a.content_hash),
            customer: c.customer,
            account: c.account,
            funding_priority: c.funding_priority,
        });
        if pending.len() >= INDEX_BATCH {
            let batch = std::mem::take(&mut pending);
            if let Err(e) = runtime.block_on(absorb(scratch, batch, &mut index.errors, format)) {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| unreadable(path, e))?;
    if let Some(e) = failure {
        return Err(scratch_failed(e));
    }
    runtime
        .block_on(absorb(scratch, pending, &mut index.errors, format))
        .map_err(scratch_failed)?;
    index.errors.extend(problems);
    if index.records == 0 && index.errors.is_empty() {
        index
            .errors
            .push(RowError::new(Location::File, "", "holds no agreements"));
    }
    Ok(index)
}

/// The cross-record checks of a batch of records, in file order, against everything seen
/// before (in the scratch index) and earlier in the batch; first sightings are added.
async fn absorb(
    scratch: &ImportScratch,
    batch: Vec<Sighting>,
    errors: &mut Vec<RowError>,
    format: Format,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = batch
        .iter()
        .filter_map(|s| s.agreement_id.as_deref())
        .collect();
    let mut agreements: HashMap<String, i64> =
        scratch.agreements_seen(&ids).await?.into_iter().collect();
    let keys: Vec<&str> = batch
        .iter()
        .filter_map(|s| s.customer.as_ref().map(|c| c.external_id.as_str()))
        .collect();
    let mut customers: HashMap<String, ScratchCustomer> = scratch
        .customers_seen(&keys)
        .await?
        .into_iter()
        .map(|c| (c.external_id.clone(), c))
        .collect();
    let refs: Vec<&str> = batch
        .iter()
        .filter_map(|s| s.account.as_ref().map(|(a, _)| a.external_ref.as_str()))
        .collect();
    let mut accounts: HashMap<String, ScratchAccount> = scratch
        .accounts_seen(&refs)
        .await?
        .into_iter()
        .map(|a| (a.external_ref.clone(), a))
        .collect();

    let mut new_agreements = Vec::new();
    let mut new_customers = Vec::new();
    let mut new_accounts = Vec::new();
    for s in batch {
        let at = s.location;
        if let Some(id) = s.agreement_id {
            match agreements.entry(id) {
                Entry::Occupied(first) => errors.push(RowError::new(
                    at,
                    Field::AgreementId.name(format),
                    format!(
                        "duplicate agreement id {:?} (also at {})",
                        first.key(),
                        location_from_code(*first.get())
                    ),
                )),
                Entry::Vacant(slot) => {
                    new_agreements.push(ScratchAgreement {
                        external_id: slot.key().clone(),
                        location: location_code(at),
                        content_hash: s.content_hash,
                        installments: s.installments as i64,
                    });
                    slot.insert(location_code(at));
                }
            }
        }
        if let Some(customer) = s.customer {
            match customers.get(&customer.external_id) {
                Some(first) => {
                    let first_at = location_from_code(first.location);
                    for (field, differs) in [
                        (Field::CustomerName, first.name != customer.name),
                        (Field::Email, first.email != customer.email),
                        (Field::Locale, first.locale != customer.locale),
                        (Field::TimeZone, first.time_zone != customer.time_zone),
                    ] {
                        if differs {
                            errors.push(RowError::new(
                                at,
                                field.name(format),
                                format!(
                                    "customer {} is also at {first_at} with a different {}: \
                                     one customer, one set of details",
                                    customer.external_id,
                                    field.name(format)
                                ),
                            ));
                        }
                    }
                }
                None => {
                    let first = ScratchCustomer {
                        external_id: customer.external_id,
                        name: customer.name,
                        email: customer.email,
                        locale: customer.locale,
                        time_zone: customer.time_zone,
                        location: location_code(at),
                    };
                    new_customers.push(first.clone());
                    customers.insert(first.external_id.clone(), first);
                }
            }
        }
        if let Some((account, owner)) = s.account {
            match accounts.get(&account.external_ref) {
                Some(first) => {
                    let first_at = location_from_code(first.location);
                    let first_owner = &first.owner;
                    let masked = crate::mask::account(&account.external_ref);
                    if *first_owner != owner {
                        errors.push(RowError::new(
                            at,
                            Field::AccountRef.name(format),
                            format!(
                                "account {masked} is also at {first_at} for customer \
                                 {first_owner}: an account belongs to one customer"
                            ),
                        ));
                    }
                    for (field, differs) in [
                        (Field::MandateRef, first.mandate_ref != account.mandate_ref),
                        (
                            Field::MandateStatus,
                            first.mandate_status != account.mandate_status,
                        ),
                        (
                            Field::FundingPriority,
                            s.funding_priority.is_some() && first.priority != s.funding_priority,
                        ),
                    ] {
                        if differs {
                            errors.push(RowError::new(
                                at,
                                field.name(format),
                                format!(
                                    "account {masked} is also at {first_at} with a different {}",
                                    field.name(format)
                                ),
                            ));
                        }
                    }
                }
                None => {
                    let first = ScratchAccount {
                        external_ref: account.external_ref,
                        owner,
                        mandate_ref: account.mandate_ref,
                        mandate_status: account.mandate_status,
                        location: location_code(at),
                        priority: s.funding_priority,
                    };
                    new_accounts.push(first.clone());
                    accounts.insert(first.external_ref.clone(), first);
                }
            }
        }
    }
    scratch
        .add(&new_agreements, &new_customers, &new_accounts)
        .await
}

/// Step 2's decision codes on an agreement that exists already (new ones have none).
const UNCHANGED: i64 = 1;
const UPDATE: i64 = 2;

/// Records compared with the database per round trip in step 2: what is fetched is
/// dropped chunk by chunk, so re-importing a large portfolio stays as lean as importing it.
const PLAN_CHUNK: usize = 5_000;

/// The field names `changed_fields` and the account comparison produce, back from the
/// comma-joined text the scratch index keeps.
fn changed_names(text: &str) -> Vec<&'static str> {
    const NAMES: [&str; 6] = [
        "name",
        "email",
        "locale",
        "time_zone",
        "mandate_ref",
        "mandate_status",
    ];
    text.split(',')
        .filter_map(|name| NAMES.iter().find(|n| **n == name).copied())
        .collect()
}

/// Step 2: compares the file (in the scratch index) with the database, page by page,
/// and records what to write there. Returns the summary; any refusal rejects the file.
async fn plan(
    store: &Store,
    scratch: &ImportScratch,
    records: u64,
    options: &ImportOptions,
    format: Format,
) -> Result<ImportSummary, ImportError> {
    let db = |e: StoreError| ImportError::Store(Box::new(e));
    let mut errors = Vec::new();
    let mut summary = ImportSummary {
        records,
        ..Default::default()
    };

    let mut after = 0;
    loop {
        let page = scratch
            .customers_page(after, PLAN_CHUNK)
            .await
            .map_err(scratch_failed)?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let keys: Vec<&str> = page.iter().map(|(_, c)| c.external_id.as_str()).collect();
        let existing: HashMap<String, _> = store
            .customers_by_external_ids(&keys)
            .await
            .map_err(db)?
            .into_iter()
            .map(|row| (row.external_id.clone(), row))
            .collect();
        let mut writes = Vec::new();
        let mut ids = Vec::new();
        for (seq, c) in &page {
            match existing.get(&c.external_id) {
                None => {
                    summary.customers_new += 1;
                    writes.push((*seq, None, String::new()));
                }
                Some(row) => {
                    ids.push((row.external_id.clone(), row.id));
                    let changed = new_customer(c).changed_fields(row);
                    if changed.is_empty() {
                        summary.customers_unchanged += 1;
                    } else {
                        summary.customers_updated += 1;
                        writes.push((*seq, Some(row.id), changed.join(",")));
                    }
                }
            }
        }
        scratch
            .add_customer_decisions(&writes, &ids)
            .await
            .map_err(scratch_failed)?;
    }

    let mut after = 0;
    loop {
        let page = scratch
            .accounts_page(after, PLAN_CHUNK)
            .await
            .map_err(scratch_failed)?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let refs: Vec<&str> = page.iter().map(|(_, a)| a.external_ref.as_str()).collect();
        let existing: HashMap<String, _> = store
            .funding_accounts_by_refs(&refs)
            .await
            .map_err(db)?
            .into_iter()
            .map(|row| (row.external_ref.clone(), row))
            .collect();
        let mut writes = Vec::new();
        let mut ids = Vec::new();
        for (seq, account) in &page {
            let owner = &account.owner;
            match existing.get(&account.external_ref) {
                None => {
                    summary.accounts_new += 1;
                    writes.push((*seq, None, String::new(), None, None));
                }
                Some(row) if row.customer_external_id != *owner => errors.push(RowError::new(
                    location_from_code(account.location),
                    Field::AccountRef.name(format),
                    format!(
                        "account {} belongs to customer {} in the database, not to {owner}",
                        crate::mask::account(&account.external_ref),
                        row.customer_external_id
                    ),
                )),
                Some(row) => {
                    ids.push((row.external_ref.clone(), row.id));
                    let mut changed = Vec::new();
                    let mut keep_status = None;
                    let mut keep_ref = None;
                    if row.mandate_ref != account.mandate_ref {
                        // A mandate reference names the customer's authorization: a
                        // different one is a different consent, recorded only when asked.
                        if options.update {
                            changed.push("mandate_ref");
                        } else {
                            summary.refused_changes.push(format!(
                                "{}: {} of account {}: {} -> {}: pass --update to change a mandate",
                                location_from_code(account.location),
                                Field::MandateRef.name(format),
                                crate::mask::account(&account.external_ref),
                                row.mandate_ref,
                                account.mandate_ref,
                            ));
                            keep_ref = Some(row.mandate_ref.clone());
                        }
                    }
                    if row.mandate_status != account.mandate_status {
                        // Consent is the customer's: an import may record a change of
                        // mandate status only when asked to (--update), and never brings
                        // a revoked mandate back (design section 4, invariant 8).
                        let refusal = if row.mandate_status == "revoked" {
                            Some("a revoked mandate is never restored by an import")
                        } else if !options.update {
                            Some("pass --update to change a mandate's status")
                        } else {
                            None
                        };
                        match refusal {
                            Some(why) => {
                                summary.refused_changes.push(format!(
                                    "{}: {} of account {}: {} -> {}: {why}",
                                    location_from_code(account.location),
                                    Field::MandateStatus.name(format),
                                    crate::mask::account(&account.external_ref),
                                    row.mandate_status,
                                    account.mandate_status,
                                ));
                                keep_status = Some(row.mandate_status.clone());
                            }
                            None => changed.push("mandate_status"),
                        }
                    }
                    if changed.is_empty() {
                        summary.accounts_unchanged += 1;
                    } else {
                        summary.accounts_updated += 1;
                        writes.push((*seq, Some(row.id), changed.join(","), keep_status, keep_ref));
                    }
                }
            }
        }
        scratch
            .add_account_decisions(&writes, &ids)
            .await
            .map_err(scratch_failed)?;
    }

    let field = Field::AgreementId.name(format);
    let mut after = 0;
    loop {
        let page = scratch
            .agreements_page(after, PLAN_CHUNK)
            .await
            .map_err(scratch_failed)?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let ids: Vec<&str> = page.iter().map(|(_, a)| a.external_id.as_str()).collect();
        let existing: HashMap<String, _> = store
            .agreement_states(&ids)
            .await
            .map_err(db)?
            .into_iter()
            .map(|s| (s.external_id.clone(), s))
            .collect();
        let mut decisions = Vec::new();
        for (_, seen) in page {
            let Some(content_hash) = seen.content_hash else {
                // Unreachable: records with problems stopped the import in step 1.
                continue;
            };
            let id = seen.external_id;
            let location = location_from_code(seen.location);
            let decision = match existing.get(&id) {
                None => None,
                Some(state) if state.content_hash == content_hash => Some((UNCHANGED, state)),
                Some(_) if !options.update => {
                    errors.push(RowError::new(
                        location,
                        field,
                        format!(
                            "agreement {id} was imported before with different content; \
                             pass --update to replace it (allowed while nothing is paid or \
                             debited)"
                        ),
                    ));
                    continue;
                }
                Some(state) => match state.replace_refusal() {
                    Some(reason) => {
                        errors.push(RowError::new(location, field, reason));
                        continue;
                    }
                    None => Some((UPDATE, state)),
                },
            };
            match decision {
                None => summary.agreements_new += 1,
                Some((UNCHANGED, _)) => summary.agreements_unchanged += 1,
                Some(_) => summary.agreements_updated += 1,
            }
            if !matches!(decision, Some((UNCHANGED, _))) {
                summary.installments_written += seen.installments as u64;
            }
            if let Some((action, state)) = decision {
                decisions.push(AgreementDecision {
                    external_id: id,
                    action,
                    db_id: state.id,
                    previous_hash: state.content_hash.clone(),
                });
            }
        }
        scratch
            .add_agreement_decisions(&decisions)
            .await
            .map_err(scratch_failed)?;
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    Ok(summary)
}

fn new_customer(c: &ScratchCustomer) -> NewCustomer {
    NewCustomer {
        external_id: c.external_id.clone(),
        name: c.name.clone(),
        email: c.email.clone(),
        locale: c.locale.clone(),
        time_zone: c.time_zone.clone(),
    }
}

/// Step 3, first part: customers, then funding accounts, in batches, in file order; the
/// ids they get go to the scratch index for the agreements.
async fn write_parties(
    store: &Store,
    scratch: &ImportScratch,
    batch_size: usize,
    now_ms: i64,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let mut after = 0;
    let mut batch = 0u64;
    loop {
        let page = scratch
            .customers_to_write(after, batch_size)
            .await
            .map_err(scratch_failed)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        batch += 1;
        let writes: Vec<CustomerWrite> = page
            .into_iter()
            .map(|c| {
                let customer = NewCustomer {
                    external_id: c.external_id,
                    name: c.name,
                    email: c.email,
                    locale: c.locale,
                    time_zone: c.time_zone,
                };
                match c.db_id {
                    Some(id) => CustomerWrite::Update {
                        id,
                        customer,
                        changed: changed_names(&c.changed),
                    },
                    None => CustomerWrite::Create(customer),
                }
            })
            .collect();
        let written = store
            .write_customers(&writes, now_ms)
            .await
            .map_err(|cause| ImportError::WriteFailed {
                stage: "customers",
                batch,
                first: None,
                progress: *progress,
                cause: Box::new(cause),
            })?;
        progress.customers += written.len() as u64;
        scratch
            .add_customer_ids(&written)
            .await
            .map_err(scratch_failed)?;
    }

    let mut after = 0;
    let mut batch = 0u64;
    loop {
        let page = scratch
            .accounts_to_write(after, batch_size)
            .await
            .map_err(scratch_failed)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        batch += 1;
        let mut writes = Vec::with_capacity(page.len());
        for a in page {
            let account = NewFundingAccount {
                external_ref: a.external_ref,
                mandate_ref: a.mandate_ref,
                mandate_status: a.mandate_status,
            };
            writes.push(match a.db_id {
                Some(id) => AccountWrite::Update {
                    id,
                    account,
                    changed: changed_names(&a.changed),
                },
                None => AccountWrite::Create {
                    customer_id: a.owner_id.ok_or_else(|| missing_id("customer", &a.owner))?,
                    account,
                },
            });
        }
        let written = store
            .write_funding_accounts(&writes, now_ms)
            .await
            .map_err(|cause| ImportError::WriteFailed {
                stage: "funding accounts",
                batch,
                first: None,
                progress: *progress,
                cause: Box::new(cause),
            })?;
        progress.accounts += written.len() as u64;
        scratch
            .add_account_ids(&written)
            .await
            .map_err(scratch_failed)?;
    }
    Ok(())
}

/// Customers read per round trip when applying funding orders.
const ORDER_PAGE: usize = 1_000;

/// Step 3, after the accounts: each customer whose accounts the file gives a
/// `funding_priority` gets that order, as `repayd funding-sources set` would set it
/// (accounts by ascending priority become 1, 2, ...; the customer's other accounts lose
/// theirs; a `funding_sources_set` event names the file). A customer who already has a
/// different order keeps it unless `--update` is given (listed as a refused change). In
/// a dry run nothing is written. Memory: one page of the scratch index and one customer.
async fn funding_orders(
    store: &Store,
    scratch: &ImportScratch,
    options: &ImportOptions,
    path: &Path,
    now_ms: i64,
    summary: &mut ImportSummary,
) -> Result<(), ImportError> {
    let mut after = (String::new(), 0i64);
    // The customer being gathered: (owner, refs in order, first location).
    let mut current: Option<(String, Vec<String>, i64)> = None;
    loop {
        let page = scratch
            .priorities_page((&after.0, after.1), ORDER_PAGE)
            .await
            .map_err(scratch_failed)?;
        let done = page.len() < ORDER_PAGE;
        for (owner, account, priority, location) in page {
            after = (owner.clone(), priority);
            match &mut current {
                Some((o, refs, _)) if *o == owner => refs.push(account),
                _ => {
                    if let Some(c) = current.take() {
                        apply_order(store, options, path, now_ms, c, summary).await?;
                    }
                    current = Some((owner, vec![account], location));
                }
            }
        }
        if done {
            break;
        }
    }
    if let Some(c) = current.take() {
        apply_order(store, options, path, now_ms, c, summary).await?;
    }
    Ok(())
}

async fn apply_order(
    store: &Store,
    options: &ImportOptions,
    path: &Path,
    now_ms: i64,
    (owner, refs, location): (String, Vec<String>, i64),
    summary: &mut ImportSummary,
) -> Result<(), ImportError> {
    let db = |e: StoreError| ImportError::Store(Box::new(e));
    let customer = store
        .customers_by_external_ids(&[owner.as_str()])
        .await
        .map_err(db)?;
    let existing = match customer.first() {
        Some(c) => store.customer_funding_sources(c.id).await.map_err(db)?,
        _ => Vec::new(),
    };
    let current: Vec<&str> = existing
        .iter()
        .filter(|f| f.priority.is_some())
        .map(|f| f.account_ref.as_str())
        .collect();
    if current == refs.iter().map(String::as_str).collect::<Vec<_>>() {
        summary.funding_orders_unchanged += 1;
        return Ok(());
    }
    if !current.is_empty() && !options.update {
        let masked = |v: &[&str]| {
            v.iter()
                .map(|r| crate::mask::account(r))
                .collect::<Vec<_>>()
                .join(", ")
        };
        summary.refused_changes.push(format!(
            "{}: funding order of customer {owner}: {} -> {}: pass --update to change it",
            location_from_code(location),
            masked(&current),
            masked(&refs.iter().map(String::as_str).collect::<Vec<_>>()),
        ));
        return Ok(());
    }
    summary.funding_orders_set += 1;
    if options.dry_run {
        return Ok(());
    }
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    store
        .set_funding_order(
            &owner,
            &refs,
            "import",
            &format!("funding_priority in {file}"),
            now_ms,
        )
        .await
        .map_err(db)?;
    Ok(())
}

fn missing_id(what: &str, key: &str) -> ImportError {
    ImportError::Internal(format!("no id for {what} {key} after writing it"))
}

/// What the agreement writes came to.
#[derive(Default)]
struct Written {
    installments: u64,
    debit_attempts_removed: u64,
    reminders_removed: u64,
}

/// Step 3, second part: reads the file again on a blocking thread, which checks each
/// record once more and hands the agreements over a bounded channel; here they are
/// matched with step 2's decisions, a batch at a time, and the new and changed ones are
/// written. A record that no longer matches what step 1 saw stops the import (the file
/// changed underneath).
#[allow(clippy::too_many_arguments)]
async fn write_agreements(
    store: &Store,
    path: &Path,
    rules: Arc<Rules>,
    scratch: &ImportScratch,
    expected_records: u64,
    batch_size: usize,
    now_ms: i64,
    progress: &mut Progress,
) -> Result<Written, ImportError> {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<ValidAgreement, Location>>(batch_size * 2);
    let reader = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut records = 0u64;
            let problems = source::read(&path, rules.format, &mut |raw| {
                records += 1;
                let checked = validate::check(&raw, &rules);
                let item = checked.agreement.ok_or(checked.location);
                let stop = item.is_err();
                if tx.blocking_send(item).is_err() || stop {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            (records, problems)
        })
    };

    let mut written = Written::default();
    let mut pending: Vec<ValidAgreement> = Vec::with_capacity(batch_size);
    let mut open = true;
    while open {
        match rx.recv().await {
            Some(Ok(agreement)) => pending.push(agreement),
            Some(Err(at)) => return Err(file_changed(path, at, progress)),
            None => open = false,
        }
        if pending.len() >= batch_size || (!open && !pending.is_empty()) {
            let batch = std::mem::take(&mut pending);
            let writes = resolve(scratch, batch, path, progress).await?;
            flush(store, writes, now_ms, progress, &mut written).await?;
        }
    }

    let (records, problems) = reader
        .await
        .map_err(|e| ImportError::Internal(format!("the file reader task failed: {e}")))?;
    let problems = problems.map_err(|e| unreadable(path, e))?;
    if let Some(p) = problems.first() {
        return Err(file_changed(path, p.row, progress));
    }
    if records != expected_records {
        return Err(file_changed(path, Location::File, progress));
    }
    Ok(written)
}

fn file_changed(path: &Path, at: Location, progress: &Progress) -> ImportError {
    ImportError::FileChanged {
        path: path.to_path_buf(),
        at,
        progress: *progress,
    }
}

/// Matches a batch of agreements read again with step 2's decisions and the parties'
/// ids: the writes for the new and changed ones, with where the first one is.
async fn resolve(
    scratch: &ImportScratch,
    batch: Vec<ValidAgreement>,
    path: &Path,
    progress: &Progress,
) -> Result<(Vec<AgreementWrite>, Option<Location>), ImportError> {
    let ids: Vec<&str> = batch.iter().map(|a| a.external_id.as_str()).collect();
    let plans: HashMap<String, (Option<String>, Option<AgreementDecision>)> = scratch
        .agreement_plans(&ids)
        .await
        .map_err(scratch_failed)?
        .into_iter()
        .map(|(id, hash, decision)| (id, (hash, decision)))
        .collect();
    let mut customers: Vec<&str> = batch
        .iter()
        .map(|a| a.customer_external_id.as_str())
        .collect();
    customers.sort_unstable();
    customers.dedup();
    let customer_ids: HashMap<String, i64> = scratch
        .customer_ids(&customers)
        .await
        .map_err(scratch_failed)?
        .into_iter()
        .collect();
    let mut accounts: Vec<&str> = batch.iter().map(|a| a.account_ref.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    let account_ids: HashMap<String, i64> = scratch
        .account_ids(&accounts)
        .await
        .map_err(scratch_failed)?
        .into_iter()
        .collect();

    let mut writes = Vec::with_capacity(batch.len());
    let mut first = None;
    for agreement in batch {
        let decision = match plans.get(&agreement.external_id) {
            Some((Some(hash), decision)) if *hash == agreement.content_hash => decision,
            _ => return Err(file_changed(path, agreement.location, progress)),
        };
        if matches!(decision, Some(d) if d.action == UNCHANGED) {
            continue;
        }
        first.get_or_insert(agreement.location);
        let customer_id = *customer_ids
            .get(&agreement.customer_external_id)
            .ok_or_else(|| missing_id("customer", &agreement.customer_external_id))?;
        let funding_account_id = *account_ids.get(&agreement.account_ref).ok_or_else(|| {
            missing_id(
                "funding account",
                &crate::mask::account(&agreement.account_ref),
            )
        })?;
        let new = NewAgreement {
            external_id: agreement.external_id,
            customer_id,
            funding_account_id,
            currency: agreement.currency,
            principal_minor: agreement.principal_minor,
            total_interest_minor: agreement.total_interest_minor,
            total_fee_minor: agreement.total_fee_minor,
            method: agreement.method,
            terms_json: agreement.terms_json,
            content_hash: agreement.content_hash,
            installments: agreement.installments,
        };
        writes.push(match decision {
            Some(d) => AgreementWrite::Replace {
                id: d.db_id,
                expected_hash: d.previous_hash.clone(),
                agreement: new,
            },
            None => AgreementWrite::Create(new),
        });
    }
    Ok((writes, first))
}

async fn flush(
    store: &Store,
    (batch, first): (Vec<AgreementWrite>, Option<Location>),
    now_ms: i64,
    progress: &mut Progress,
    written: &mut Written,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    match store.write_agreements(&batch, now_ms).await {
        Ok(w) => {
            progress.agreement_batches += 1;
            progress.agreements += w.created + w.replaced;
            written.installments += w.installments;
            written.debit_attempts_removed += w.debit_attempts_removed;
            written.reminders_removed += w.reminders_removed;
            tracing::debug!(
                batch = progress.agreement_batches,
                agreements = w.created + w.replaced,
                installments = w.installments,
                "import batch committed"
            );
            Ok(())
        }
        Err(cause) => Err(ImportError::WriteFailed {
            stage: "agreements",
            batch: progress.agreement_batches + 1,
            first,
            progress: *progress,
            cause: Box::new(cause),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.CSV")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("b.json")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("b.txt")), None);
        assert_eq!(Format::from_path(Path::new("b")), None);
    }

    #[test]
    fn invalid_lists_one_problem_per_line_in_file_order() {
        let err = invalid(vec![
            RowError::new(Location::Line(9), "email", "missing"),
            RowError::new(Location::Line(3), "currency", "unknown"),
            RowError::new(Location::Line(3), "principal", "bad"),
        ]);
        assert_eq!(
            err.to_string(),
            "line 3: currency: unknown\nline 3: principal: bad\nline 9: email: missing"
        );
        assert_eq!(err.exit_code(), 65);
    }
}
