//! Reading agreement files (CSV, JSON): validated as a whole before anything is written.
//! The formats are documented in `docs/import-format.md`.
//!
//! An import runs in three steps, streaming the file so memory does not grow with it:
//!
//! 1. **Read**: every record is checked on its own (fields, terms, the schedule generated
//!    or the explicit one checked) and against the others (duplicate agreement ids, one
//!    customer or account given with two sets of details). Only ids, content hashes,
//!    customers and accounts are kept. Any problem: the file is rejected, every problem
//!    named, nothing written.
//! 2. **Plan**: the file is compared with the database: new, unchanged (same content
//!    hash) or changed agreements; a changed one is refused unless `--update` is given and
//!    nothing has been paid or debited on it. Any refusal: rejected as in step 1.
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
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use validate::{Checked, Rules};

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
    /// Changes the file asks for that were not made (a mandate's status without
    /// `--update`; a revoked mandate never restored), one line each naming where.
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

    let index = {
        let path = path.to_path_buf();
        let rules = Arc::clone(&rules);
        run_blocking(move || read_and_check(&path, &rules)).await?
    };
    if !index.errors.is_empty() {
        return Err(invalid(index.errors));
    }

    let plan = plan(store, index, options, format).await?;
    let mut summary = plan.summary.clone();
    summary.dry_run = options.dry_run;
    if options.dry_run {
        tracing::info!(
            new = summary.agreements_new,
            unchanged = summary.agreements_unchanged,
            updated = summary.agreements_updated,
            "import checked (dry run, nothing written)"
        );
        return Ok(summary);
    }

    let mut progress = Progress::default();
    let ids = write_parties(store, &plan, batch_size, now_ms, &mut progress).await?;
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
        Arc::clone(&rules),
        plan,
        ids,
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
            let cal = HolidayCalendar::from_file(path)
                .map_err(|e| ImportError::Defaults(e.to_string()))?;
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

/// What step 1 keeps of the file.
#[derive(Default)]
struct FileIndex {
    records: u64,
    /// Agreement id -> where it is, its content hash and installment count.
    agreements: HashMap<String, Seen>,
    /// Agreement ids in file order, so plans and writes are deterministic.
    agreement_order: Vec<String>,
    customers: Vec<(NewCustomer, Location)>,
    customer_pos: HashMap<String, usize>,
    /// Account, the external id of its customer, where it first appears.
    accounts: Vec<(NewFundingAccount, String, Location)>,
    account_pos: HashMap<String, usize>,
    errors: Vec<RowError>,
}

struct Seen {
    location: Location,
    content_hash: Option<String>,
    installments: u64,
}

fn read_and_check(path: &Path, rules: &Rules) -> Result<FileIndex, ImportError> {
    let mut index = FileIndex::default();
    let problems = source::read(path, rules.format, &mut |raw| {
        let checked = validate::check(&raw, rules);
        index.absorb(checked, rules.format);
        ControlFlow::Continue(())
    })
    .map_err(|e| unreadable(path, e))?;
    index.errors.extend(problems);
    if index.records == 0 && index.errors.is_empty() {
        index
            .errors
            .push(RowError::new(Location::File, "", "holds no agreements"));
    }
    Ok(index)
}

impl FileIndex {
    /// Takes in one checked record: its problems, and the cross-record checks.
    fn absorb(&mut self, c: Checked, format: Format) {
        self.records += 1;
        self.errors.extend(c.errors);
        let at = c.location;
        if let Some(id) = c.agreement_id {
            match self.agreements.entry(id) {
                Entry::Occupied(first) => self.errors.push(RowError::new(
                    at,
                    Field::AgreementId.name(format),
                    format!(
                        "duplicate agreement id {:?} (also at {})",
                        first.key(),
                        first.get().location
                    ),
                )),
                Entry::Vacant(slot) => {
                    self.agreement_order.push(slot.key().clone());
                    slot.insert(Seen {
                        location: at,
                        installments: c
                            .agreement
                            .as_ref()
                            .map_or(0, |a| a.installments.len() as u64),
                        content_hash: c.agreement.map(|a| a.content_hash),
                    });
                }
            }
        }
        if let Some(customer) = c.customer {
            match self.customer_pos.get(&customer.external_id) {
                Some(&i) => {
                    let (first, first_at) = &self.customers[i];
                    for (field, differs) in [
                        (Field::CustomerName, first.name != customer.name),
                        (Field::Email, first.email != customer.email),
                        (Field::Locale, first.locale != customer.locale),
                        (Field::TimeZone, first.time_zone != customer.time_zone),
                    ] {
                        if differs {
                            self.errors.push(RowError::new(
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
                    self.customer_pos
                        .insert(customer.external_id.clone(), self.customers.len());
                    self.customers.push((customer, at));
                }
            }
        }
        if let Some((account, owner)) = c.account {
            match self.account_pos.get(&account.external_ref) {
                Some(&i) => {
                    let (first, first_owner, first_at) = &self.accounts[i];
                    let masked = crate::mask::account(&account.external_ref);
                    if *first_owner != owner {
                        self.errors.push(RowError::new(
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
                    ] {
                        if differs {
                            self.errors.push(RowError::new(
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
                    self.account_pos
                        .insert(account.external_ref.clone(), self.accounts.len());
                    self.accounts.push((account, owner, at));
                }
            }
        }
    }
}

/// What to do with an agreement of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    New,
    Unchanged,
    Update { id: i64, previous_hash: String },
}

#[derive(Debug, Clone)]
struct Planned {
    content_hash: String,
    action: Action,
}

/// An account to write: the account, its owner's external id, and `Some((id, changed
/// fields))` when it exists already.
type PlannedAccount = (NewFundingAccount, String, Option<(i64, Vec<&'static str>)>);

/// The outcome of step 2.
struct Plan {
    agreements: HashMap<String, Planned>,
    records: u64,
    customer_writes: Vec<CustomerWrite>,
    /// Customers already in the database, by external id.
    customer_ids: HashMap<String, i64>,
    account_writes: Vec<PlannedAccount>,
    account_ids: HashMap<String, i64>,
    summary: ImportSummary,
}

/// Records compared with the database per round trip in step 2: what is fetched is
/// dropped chunk by chunk, so re-importing a large portfolio stays as lean as importing it.
const PLAN_CHUNK: usize = 5_000;

/// Takes up to `n` items off `iter`.
fn next_chunk<T>(iter: &mut impl Iterator<Item = T>, n: usize) -> Vec<T> {
    iter.by_ref().take(n).collect()
}

async fn plan(
    store: &Store,
    mut index: FileIndex,
    options: &ImportOptions,
    format: Format,
) -> Result<Plan, ImportError> {
    let db = |e: StoreError| ImportError::Store(Box::new(e));
    let mut errors = Vec::new();
    let mut summary = ImportSummary {
        records: index.records,
        ..Default::default()
    };

    let mut customer_writes = Vec::new();
    let mut customer_ids = HashMap::new();
    let mut customers = std::mem::take(&mut index.customers).into_iter();
    index.customer_pos = HashMap::new();
    loop {
        let chunk = next_chunk(&mut customers, PLAN_CHUNK);
        if chunk.is_empty() {
            break;
        }
        let keys: Vec<&str> = chunk.iter().map(|(c, _)| c.external_id.as_str()).collect();
        let existing: HashMap<String, _> = store
            .customers_by_external_ids(&keys)
            .await
            .map_err(db)?
            .into_iter()
            .map(|row| (row.external_id.clone(), row))
            .collect();
        for (customer, _) in chunk {
            match existing.get(&customer.external_id) {
                None => {
                    summary.customers_new += 1;
                    customer_writes.push(CustomerWrite::Create(customer));
                }
                Some(row) => {
                    customer_ids.insert(row.external_id.clone(), row.id);
                    let changed = customer.changed_fields(row);
                    if changed.is_empty() {
                        summary.customers_unchanged += 1;
                    } else {
                        summary.customers_updated += 1;
                        customer_writes.push(CustomerWrite::Update {
                            id: row.id,
                            customer,
                            changed,
                        });
                    }
                }
            }
        }
    }

    let mut account_writes = Vec::new();
    let mut account_ids = HashMap::new();
    let mut accounts = std::mem::take(&mut index.accounts).into_iter();
    index.account_pos = HashMap::new();
    loop {
        let chunk = next_chunk(&mut accounts, PLAN_CHUNK);
        if chunk.is_empty() {
            break;
        }
        let refs: Vec<&str> = chunk
            .iter()
            .map(|(a, _, _)| a.external_ref.as_str())
            .collect();
        let existing: HashMap<String, _> = store
            .funding_accounts_by_refs(&refs)
            .await
            .map_err(db)?
            .into_iter()
            .map(|row| (row.external_ref.clone(), row))
            .collect();
        for (account, owner, at) in chunk {
            match existing.get(&account.external_ref) {
                None => {
                    summary.accounts_new += 1;
                    account_writes.push((account, owner, None));
                }
                Some(row) if row.customer_external_id != owner => errors.push(RowError::new(
                    at,
                    Field::AccountRef.name(format),
                    format!(
                        "account {} belongs to customer {} in the database, not to {owner}",
                        crate::mask::account(&account.external_ref),
                        row.customer_external_id
                    ),
                )),
                Some(row) => {
                    account_ids.insert(row.external_ref.clone(), row.id);
                    let mut account = account;
                    let mut changed = Vec::new();
                    if row.mandate_ref != account.mandate_ref {
                        changed.push("mandate_ref");
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
                                    "{at}: {} of account {}: {} -> {}: {why}",
                                    Field::MandateStatus.name(format),
                                    crate::mask::account(&account.external_ref),
                                    row.mandate_status,
                                    account.mandate_status,
                                ));
                                account.mandate_status = row.mandate_status.clone();
                            }
                            None => changed.push("mandate_status"),
                        }
                    }
                    if changed.is_empty() {
                        summary.accounts_unchanged += 1;
                    } else {
                        summary.accounts_updated += 1;
                        account_writes.push((account, owner, Some((row.id, changed))));
                    }
                }
            }
        }
    }

    let mut agreements = HashMap::with_capacity(index.agreements.len());
    let field = Field::AgreementId.name(format);
    let mut order = std::mem::take(&mut index.agreement_order).into_iter();
    loop {
        let chunk = next_chunk(&mut order, PLAN_CHUNK);
        if chunk.is_empty() {
            break;
        }
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let existing: HashMap<String, _> = store
            .agreement_states(&ids)
            .await
            .map_err(db)?
            .into_iter()
            .map(|s| (s.external_id.clone(), s))
            .collect();
        for id in chunk {
            let Some(seen) = index.agreements.remove(&id) else {
                continue;
            };
            let Some(content_hash) = seen.content_hash else {
                // Unreachable: records with problems stopped the import in step 1.
                continue;
            };
            let action = match existing.get(&id) {
                None => Action::New,
                Some(state) if state.content_hash == content_hash => Action::Unchanged,
                Some(_) if !options.update => {
                    errors.push(RowError::new(
                        seen.location,
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
                        errors.push(RowError::new(seen.location, field, reason));
                        continue;
                    }
                    None => Action::Update {
                        id: state.id,
                        previous_hash: state.content_hash.clone(),
                    },
                },
            };
            match action {
                Action::New => summary.agreements_new += 1,
                Action::Unchanged => summary.agreements_unchanged += 1,
                Action::Update { .. } => summary.agreements_updated += 1,
            }
            if action != Action::Unchanged {
                summary.installments_written += seen.installments;
            }
            agreements.insert(
                id,
                Planned {
                    content_hash,
                    action,
                },
            );
        }
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    Ok(Plan {
        agreements,
        records: index.records,
        customer_writes,
        customer_ids,
        account_writes,
        account_ids,
        summary,
    })
}

/// Customer and account ids by external id / reference, after step 3's first part.
struct PartyIds {
    customers: HashMap<String, i64>,
    accounts: HashMap<String, i64>,
}

async fn write_parties(
    store: &Store,
    plan: &Plan,
    batch_size: usize,
    now_ms: i64,
    progress: &mut Progress,
) -> Result<PartyIds, ImportError> {
    let mut customers = plan.customer_ids.clone();
    for (i, chunk) in plan.customer_writes.chunks(batch_size).enumerate() {
        let written = store
            .write_customers(chunk, now_ms)
            .await
            .map_err(|cause| ImportError::WriteFailed {
                stage: "customers",
                batch: i as u64 + 1,
                first: None,
                progress: *progress,
                cause: Box::new(cause),
            })?;
        progress.customers += written.len() as u64;
        customers.extend(written);
    }

    let mut writes = Vec::with_capacity(plan.account_writes.len());
    for (account, owner, existing) in &plan.account_writes {
        writes.push(match existing {
            Some((id, changed)) => AccountWrite::Update {
                id: *id,
                account: account.clone(),
                changed: changed.clone(),
            },
            None => AccountWrite::Create {
                customer_id: *customers
                    .get(owner)
                    .ok_or_else(|| missing_id("customer", owner))?,
                account: account.clone(),
            },
        });
    }
    let mut accounts = plan.account_ids.clone();
    for (i, chunk) in writes.chunks(batch_size).enumerate() {
        let written = store
            .write_funding_accounts(chunk, now_ms)
            .await
            .map_err(|cause| ImportError::WriteFailed {
                stage: "funding accounts",
                batch: i as u64 + 1,
                first: None,
                progress: *progress,
                cause: Box::new(cause),
            })?;
        progress.accounts += written.len() as u64;
        accounts.extend(written);
    }
    Ok(PartyIds {
        customers,
        accounts,
    })
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
/// record once more and hands the new and changed agreements over a bounded channel;
/// here they are written in batches. A record that no longer matches what step 1 saw
/// stops the import (the file changed underneath).
#[allow(clippy::too_many_arguments)]
async fn write_agreements(
    store: &Store,
    path: &Path,
    rules: Arc<Rules>,
    plan: Plan,
    ids: PartyIds,
    batch_size: usize,
    now_ms: i64,
    progress: &mut Progress,
) -> Result<Written, ImportError> {
    let expected_records = plan.records;
    let planned = Arc::new(plan.agreements);
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<ValidAgreement, Location>>(batch_size * 2);
    let reader = {
        let path = path.to_path_buf();
        let planned = Arc::clone(&planned);
        tokio::task::spawn_blocking(move || {
            let mut records = 0u64;
            let problems = source::read(&path, rules.format, &mut |raw| {
                records += 1;
                let checked = validate::check(&raw, &rules);
                let item = match checked.agreement {
                    Some(a) => match planned.get(&a.external_id) {
                        Some(p) if p.content_hash == a.content_hash => {
                            if p.action == Action::Unchanged {
                                return ControlFlow::Continue(());
                            }
                            Ok(a)
                        }
                        _ => Err(checked.location),
                    },
                    None => Err(checked.location),
                };
                let stop = item.is_err();
                if tx.blocking_send(item).is_err() || stop {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            (records, problems)
        })
    };

    let changed = |at: Location, progress: &Progress| ImportError::FileChanged {
        path: path.to_path_buf(),
        at,
        progress: *progress,
    };
    let mut written = Written::default();
    let mut batch: Vec<AgreementWrite> = Vec::with_capacity(batch_size);
    let mut batch_start: Option<Location> = None;
    while let Some(item) = rx.recv().await {
        let agreement = item.map_err(|at| changed(at, progress))?;
        let planned = planned
            .get(&agreement.external_id)
            .ok_or_else(|| changed(agreement.location, progress))?;
        batch_start.get_or_insert(agreement.location);
        let customer_id = *ids
            .customers
            .get(&agreement.customer_external_id)
            .ok_or_else(|| missing_id("customer", &agreement.customer_external_id))?;
        let funding_account_id = *ids.accounts.get(&agreement.account_ref).ok_or_else(|| {
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
        batch.push(match &planned.action {
            Action::Update { id, previous_hash } => AgreementWrite::Replace {
                id: *id,
                expected_hash: previous_hash.clone(),
                agreement: new,
            },
            _ => AgreementWrite::Create(new),
        });
        if batch.len() >= batch_size {
            flush(
                store,
                &mut batch,
                &mut batch_start,
                now_ms,
                progress,
                &mut written,
            )
            .await?;
        }
    }
    flush(
        store,
        &mut batch,
        &mut batch_start,
        now_ms,
        progress,
        &mut written,
    )
    .await?;

    let (records, problems) = reader
        .await
        .map_err(|e| ImportError::Internal(format!("the file reader task failed: {e}")))?;
    let problems = problems.map_err(|e| unreadable(path, e))?;
    if let Some(p) = problems.first() {
        return Err(changed(p.row, progress));
    }
    if records != expected_records {
        return Err(changed(Location::File, progress));
    }
    Ok(written)
}

async fn flush(
    store: &Store,
    batch: &mut Vec<AgreementWrite>,
    batch_start: &mut Option<Location>,
    now_ms: i64,
    progress: &mut Progress,
    written: &mut Written,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    let result = store.write_agreements(batch, now_ms).await;
    let first = batch_start.take();
    match result {
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
            batch.clear();
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
