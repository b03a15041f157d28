//! Streaming readers: CSV record by record, JSON element by element out of the top-level
//! array. Neither ever holds the whole file; each hands one [`RawRecord`] at a time to a
//! sink and reports problems with the file's shape (header, syntax) as [`RowError`]s.

use super::Format;
use super::record::{Field, Location, RawInstallment, RawRecord, RawSchedule, RowError};
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::Cell;
use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::Path;

/// Where records go; `Break` stops reading (the consumer has failed or has enough).
pub type Sink<'a> = dyn FnMut(RawRecord) -> ControlFlow<()> + 'a;

const READ_BUFFER: usize = 1 << 16;

/// The longest CSV line and the largest JSON array element read: far above any real
/// agreement (a 600-installment explicit schedule is ~40 KiB), and a bound on the memory
/// a file without line breaks (`/dev/zero`) can take.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

/// Streams the records of `path` into `sink`. Returns the problems with the file's shape
/// (which stop reading where they occur); an `Err` only when the file cannot be read.
pub fn read(path: &Path, format: Format, sink: &mut Sink<'_>) -> std::io::Result<Vec<RowError>> {
    let file = File::open(path)?;
    let reader = BufReader::with_capacity(READ_BUFFER, file);
    match format {
        Format::Csv => read_csv(reader, sink),
        Format::Json => read_json(reader, sink),
    }
}

/// Raised through the reader when one line or record exceeds [`MAX_RECORD_BYTES`]; the
/// readers turn it into a [`RowError`] at `location`.
#[derive(Debug)]
struct TooLarge {
    location: Location,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exceeds {MAX_RECORD_BYTES} bytes", self.location)
    }
}

impl std::error::Error for TooLarge {}

impl TooLarge {
    /// The problem, if `e` is this limit speaking.
    fn from_io(e: &std::io::Error) -> Option<RowError> {
        let too_large = e.get_ref()?.downcast_ref::<TooLarge>()?;
        let what = match too_large.location {
            Location::Item(_) => "is larger than",
            _ => "is longer than",
        };
        Some(RowError::new(
            too_large.location,
            "",
            format!(
                "{what} {} KiB, the limit for one record: is this an agreements file?",
                MAX_RECORD_BYTES / 1024
            ),
        ))
    }
}

/// Counts lines (`\n`, so CRLF files count right) and refuses a line longer than
/// [`MAX_RECORD_BYTES`]. `line` is the 1-based line of the next byte.
struct LineLimit<R> {
    inner: R,
    line: u64,
    line_bytes: u64,
}

impl<R: std::io::Read> std::io::Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.line += 1;
                self.line_bytes = 0;
            } else {
                self.line_bytes += 1;
                if self.line_bytes > MAX_RECORD_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        TooLarge {
                            location: Location::Line(self.line),
                        },
                    ));
                }
            }
        }
        Ok(n)
    }
}

fn read_csv<R: std::io::Read>(reader: R, sink: &mut Sink<'_>) -> std::io::Result<Vec<RowError>> {
    let reader = LineLimit {
        inner: reader,
        line: 1,
        line_bytes: 0,
    };
    let mut rdr = csv::ReaderBuilder::new()
        // Rows with a wrong field count are reported per row, not as a fatal error.
        .flexible(true)
        .trim(csv::Trim::All)
        // Records end at `\n`; a `\r` before it is trimmed with the last value. (With the
        // default CRLF terminator the csv crate counts a CRLF file's lines one short.)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(reader);
    let header = Location::Line(1);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return csv_failure(e, header).map(|e| vec![e]),
    };
    if headers.is_empty() {
        return Ok(vec![RowError::new(Location::File, "", "the file is empty")]);
    }
    let mut problems = Vec::new();
    let mut columns: Vec<Option<Field>> = Vec::with_capacity(headers.len());
    for name in headers.iter() {
        let field = Field::from_csv_column(&name.to_ascii_lowercase());
        match field {
            None if name.is_empty() => {
                problems.push(RowError::new(header, "", "a column has no name"));
            }
            None => problems.push(RowError::new(
                header,
                super::record::echo(name),
                "unknown column (the columns are listed in docs/import-format.md)",
            )),
            Some(f) if columns.contains(&Some(f)) => {
                problems.push(RowError::new(
                    header,
                    f.csv_column(),
                    "column appears twice",
                ));
            }
            Some(_) => {}
        }
        columns.push(field);
    }
    for f in Field::ALL {
        if f.required_column() && !columns.contains(&Some(f)) {
            problems.push(RowError::new(
                header,
                f.csv_column(),
                "required column is missing",
            ));
        }
    }
    if !problems.is_empty() {
        // Without a sound header no row can be read for what it means.
        return Ok(problems);
    }

    let mut row = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let line = row.position().map_or(0, |p| p.line());
                let location = Location::Line(line);
                let record = if row.len() != headers.len() {
                    RawRecord::unreadable(
                        location,
                        RowError::new(
                            location,
                            "",
                            format!(
                                "has {} fields but the header has {}",
                                row.len(),
                                headers.len()
                            ),
                        ),
                    )
                } else {
                    let mut record = RawRecord::new(location);
                    for (value, field) in row.iter().zip(&columns) {
                        match field {
                            Some(Field::Schedule) if !value.is_empty() => {
                                record.schedule = Some(RawSchedule::Compact(value.to_string()));
                            }
                            Some(Field::Schedule) => {}
                            Some(f) => record.set(*f, value),
                            None => {}
                        }
                    }
                    record
                };
                if sink(record).is_break() {
                    break;
                }
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let location = Location::Line(line);
                match e.kind() {
                    // A bad byte spoils one row; the reader carries on with the next.
                    csv::ErrorKind::Utf8 { .. } => {
                        let record = RawRecord::unreadable(
                            location,
                            RowError::new(location, "", "is not valid UTF-8"),
                        );
                        if sink(record).is_break() {
                            break;
                        }
                    }
                    _ => {
                        problems.push(csv_failure(e, location)?);
                        break;
                    }
                }
            }
        }
    }
    Ok(problems)
}

/// An I/O error stays an error (the file could not be read); anything else is a problem
/// with the file's contents at `location`.
fn csv_failure(e: csv::Error, location: Location) -> std::io::Result<RowError> {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => TooLarge::from_io(&io).ok_or(io),
        csv::ErrorKind::Utf8 { .. } => Ok(RowError::new(location, "", "is not valid UTF-8")),
        other => Ok(RowError::new(
            location,
            "",
            format!("cannot be read as CSV: {other:?}"),
        )),
    }
}

/// Refuses a JSON array element larger than [`MAX_RECORD_BYTES`]: counts the bytes read
/// since the last element ended (`consumed` is reset by the array visitor).
struct ElementLimit<'c, R> {
    inner: R,
    consumed: &'c Cell<u64>,
    next_index: &'c Cell<u64>,
}

impl<R: std::io::Read> std::io::Read for ElementLimit<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let consumed = self.consumed.get() + n as u64;
        self.consumed.set(consumed);
        if consumed > MAX_RECORD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                TooLarge {
                    location: Location::Item(self.next_index.get()),
                },
            ));
        }
        Ok(n)
    }
}

fn read_json<R: std::io::BufRead>(
    mut reader: R,
    sink: &mut Sink<'_>,
) -> std::io::Result<Vec<RowError>> {
    // Editors on Windows start UTF-8 files with a byte-order mark; JSON itself has none.
    if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    let next_index = Cell::new(0u64);
    let consumed = Cell::new(0u64);
    let stopped = Cell::new(false);
    let entered = Cell::new(false);
    // serde_json reads byte by byte: the limit sits on top of the buffered reader.
    let limited = ElementLimit {
        inner: reader,
        consumed: &consumed,
        next_index: &next_index,
    };
    let mut de = serde_json::Deserializer::from_reader(limited);
    let visitor = ArrayVisitor {
        sink,
        next_index: &next_index,
        consumed: &consumed,
        stopped: &stopped,
        entered: &entered,
    };
    let result = de.deserialize_seq(visitor).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(Vec::new()),
        // The consumer asked to stop: what follows in the file does not matter.
        Err(_) if stopped.get() => Ok(Vec::new()),
        Err(e) if e.is_io() => {
            let io = std::io::Error::from(e);
            match TooLarge::from_io(&io) {
                Some(problem) => Ok(vec![problem]),
                None => Err(io),
            }
        }
        Err(e) => {
            let location = if e.is_data() && !entered.get() {
                // The top level is not an array.
                Location::File
            } else {
                Location::Item(next_index.get())
            };
            let reason = if e.is_data() && location == Location::File {
                format!("{e}; the file must be a JSON array of agreement objects")
            } else {
                format!("is not valid JSON: {e}")
            };
            Ok(vec![RowError::new(location, "", reason)])
        }
    }
}

/// Visits the top-level array, handing each element to the sink as it is parsed.
struct ArrayVisitor<'s, 'c> {
    sink: &'s mut Sink<'c>,
    next_index: &'s Cell<u64>,
    consumed: &'s Cell<u64>,
    stopped: &'s Cell<bool>,
    /// The top level is an array: later errors are in an element.
    entered: &'s Cell<bool>,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of agreement objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.entered.set(true);
        while let Some(StrictValue(value)) = seq.next_element::<StrictValue>()? {
            let index = self.next_index.get();
            self.next_index.set(index + 1);
            self.consumed.set(0);
            if (self.sink)(record_from_json(index, value)).is_break() {
                self.stopped.set(true);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// A JSON value read strictly: an object with the same key twice is an error (serde_json
/// would keep the last one silently, so `"principal"` given twice would import whichever
/// came last).
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {:?} appears twice in one object",
                    super::record::echo(&key)
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Turns one array element into a record: known keys to fields, anything else an error.
fn record_from_json(index: u64, value: Value) -> RawRecord {
    let location = Location::Item(index);
    let Value::Object(top) = value else {
        return RawRecord::unreadable(
            location,
            RowError::new(location, "", "expected an agreement object"),
        );
    };
    let mut record = RawRecord::new(location);
    for (key, value) in top {
        match key.as_str() {
            "customer" | "funding_account" | "terms" => match value {
                Value::Object(inner) => {
                    for (sub, v) in inner {
                        let path = format!("{key}.{sub}");
                        match Field::from_json_path(&path) {
                            Some(f) => set_scalar(&mut record, f, &path, v),
                            None => {
                                record
                                    .errors
                                    .push(RowError::new(location, path, "unknown field"))
                            }
                        }
                    }
                }
                Value::Null => {}
                _ => record
                    .errors
                    .push(RowError::new(location, key, "expected an object")),
            },
            "schedule" => match value {
                Value::Array(entries) => {
                    let mut lines = Vec::with_capacity(entries.len());
                    for (i, entry) in entries.into_iter().enumerate() {
                        lines.push(installment_from_json(&mut record, i, entry));
                    }
                    record.schedule = Some(RawSchedule::Entries(lines));
                }
                Value::Null => {}
                _ => record.errors.push(RowError::new(
                    location,
                    "schedule",
                    "expected an array of installments",
                )),
            },
            _ => match Field::from_json_path(&key) {
                Some(f) => set_scalar(&mut record, f, &key, value),
                None => record
                    .errors
                    .push(RowError::new(location, key, "unknown field")),
            },
        }
    }
    record
}

fn installment_from_json(record: &mut RawRecord, i: usize, entry: Value) -> RawInstallment {
    let location = record.location;
    let mut line = RawInstallment::default();
    let Value::Object(fields) = entry else {
        record.errors.push(RowError::new(
            location,
            format!("schedule[{i}]"),
            "expected an installment object",
        ));
        return line;
    };
    for (key, v) in fields {
        let path = format!("schedule[{i}].{key}");
        let slot = match key.as_str() {
            "seq" => &mut line.seq,
            "due_date" => &mut line.due_date,
            "principal" => &mut line.principal,
            "interest" => &mut line.interest,
            "fee" => &mut line.fee,
            _ => {
                record
                    .errors
                    .push(RowError::new(location, path, "unknown field"));
                continue;
            }
        };
        match scalar_text(&v) {
            Ok(text) => *slot = text,
            Err(reason) => record.errors.push(RowError::new(location, path, reason)),
        }
    }
    line
}

fn set_scalar(record: &mut RawRecord, field: Field, path: &str, value: Value) {
    match scalar_text(&value) {
        Ok(Some(text)) => record.set(field, &text),
        Ok(None) => {}
        Err(reason) => record
            .errors
            .push(RowError::new(record.location, path, reason)),
    }
}

/// The text of a JSON scalar. Strings as they are; integers exactly; numbers with a
/// fraction are refused, because serde_json reads them as binary floating point and a
/// digit could be lost before validation ever saw it.
fn scalar_text(value: &Value) -> Result<Option<String>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Value::Number(_) => {
            Err("write decimal numbers as strings (\"1000.50\", \"0.12\") so no digit is lost")
        }
        Value::Bool(_) | Value::Array(_) | Value::Object(_) => Err("expected a string"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(format: Format, text: &str) -> (Vec<RawRecord>, Vec<RowError>) {
        let mut records = Vec::new();
        let problems = match format {
            Format::Csv => read_csv(text.as_bytes(), &mut |r| {
                records.push(r);
                ControlFlow::Continue(())
            }),
            Format::Json => read_json(text.as_bytes(), &mut |r| {
                records.push(r);
                ControlFlow::Continue(())
            }),
        }
        .expect("in-memory reads cannot fail");
        (records, problems)
    }

    const HEADER: &str = "customer_external_id,customer_name,email,locale,time_zone,account_ref,\
        mandate_ref,mandate_status,agreement_id,currency,principal,method,schedule\n";

    #[test]
    fn csv_rows_carry_their_line_numbers_and_trimmed_values() {
        let text = format!(
            "{HEADER}C1,Ann,a@example.com,en,Europe/London,ACC1,M1,active,A1,GBP, 100.00 ,annuity,\n\
             \"C2\",\"Bo, Jr.\",b@example.com,en,Europe/London,ACC2,M2,active,A2,GBP,50,,\
             2026-12-01:25|2027-01-01:25\n"
        );
        let (records, problems) = collect(Format::Csv, &text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].location, Location::Line(2));
        assert_eq!(records[0].get(Field::Principal), Some("100.00"));
        assert_eq!(records[0].get(Field::Method), Some("annuity"));
        assert!(records[0].schedule.is_none());
        assert_eq!(records[1].location, Location::Line(3));
        assert_eq!(records[1].get(Field::CustomerName), Some("Bo, Jr."));
        assert_eq!(records[1].get(Field::Method), None);
        assert_eq!(
            records[1].schedule,
            Some(RawSchedule::Compact("2026-12-01:25|2027-01-01:25".into()))
        );
    }

    #[test]
    fn csv_header_problems_are_all_named_and_stop_the_read() {
        let text = "customer_external_id,name,email,email\nx,y,z,w\n";
        let (records, problems) = collect(Format::Csv, text);
        assert!(records.is_empty());
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"name"), "{fields:?}");
        assert!(fields.contains(&"email"), "{fields:?}");
        assert!(fields.contains(&"customer_name"), "{fields:?}");
        assert!(fields.contains(&"principal"), "{fields:?}");
        assert!(problems.iter().all(|p| p.row == Location::Line(1)));
    }

    #[test]
    fn an_empty_csv_says_so() {
        let (records, problems) = collect(Format::Csv, "");
        assert!(records.is_empty());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "the file is empty");
    }

    #[test]
    fn csv_short_rows_are_reported_and_reading_goes_on() {
        let text = format!("{HEADER}a,b\n");
        let (records, problems) = collect(Format::Csv, &text);
        assert!(problems.is_empty());
        assert_eq!(records.len(), 1);
        assert!(!records[0].readable);
        assert!(records[0].errors[0].reason.contains("has 2 fields"));
    }

    #[test]
    fn json_elements_stream_with_their_index_and_unknown_keys_are_named() {
        let text = r#"[
            {"agreement_id": "A1", "principal": "10.00", "customer": {"email": "a@example.com", "phone": "1"}},
            {"agreement_id": "A2", "principal": 10.5, "terms": {"installments": 3},
             "schedule": [{"seq": 1, "due_date": "2026-12-01", "principal": "10", "color": "red"}]},
            42
        ]"#;
        let (records, problems) = collect(Format::Json, text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].location, Location::Item(0));
        assert_eq!(records[0].get(Field::Email), Some("a@example.com"));
        assert_eq!(records[0].errors[0].field, "customer.phone");
        assert_eq!(records[1].get(Field::Installments), Some("3"));
        let fields: Vec<&str> = records[1].errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["principal", "schedule[0].color"]);
        assert!(!records[2].readable);
    }

    #[test]
    fn crlf_lines_are_numbered_like_lf_lines() {
        let lf = format!(
            "{HEADER}C1,Ann,a@example.com,en,Europe/London,ACC1,M1,active,A1,GBP,100,annuity,\n\
             C2,Bo,b@example.com,en,Europe/London,ACC2,M2,active,A2,GBP,\"50\",annuity,\n\
             a,b\n"
        );
        let crlf = lf.replace('\n', "\r\n");
        for text in [&lf, &crlf] {
            let (records, problems) = collect(Format::Csv, text);
            assert!(problems.is_empty(), "{problems:?}");
            let lines: Vec<Location> = records.iter().map(|r| r.location).collect();
            assert_eq!(
                lines,
                [Location::Line(2), Location::Line(3), Location::Line(4)],
                "{text:?}"
            );
            assert_eq!(records[1].get(Field::Principal), Some("50"));
            assert_eq!(records[1].get(Field::Method), Some("annuity"));
            assert!(records[2].errors[0].row == Location::Line(4));
        }
    }

    #[test]
    fn overlong_lines_and_elements_are_refused_with_a_short_message() {
        // No line break at all, as from /dev/zero.
        let zeros = vec![0u8; (MAX_RECORD_BYTES + 10) as usize];
        let mut records = 0;
        let problems = read_csv(&zeros[..], &mut |_| {
            records += 1;
            ControlFlow::Continue(())
        })
        .expect("a problem, not an I/O error");
        assert_eq!(records, 0);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].row, Location::Line(1));
        assert!(problems[0].reason.contains("1024 KiB"), "{problems:?}");
        assert!(problems[0].to_string().len() < 200);
        // A long header name is echoed in part.
        let header = format!("{}\n", "x".repeat(100_000));
        let (_, problems) = collect(Format::Csv, &header);
        assert!(
            problems.iter().all(|p| p.to_string().len() < 300),
            "{problems:?}"
        );
        // A JSON element past the limit, after a good one.
        let big = format!(
            "[{{\"agreement_id\": \"A1\"}}, {{\"agreement_id\": \"{}\"}}]",
            "y".repeat((MAX_RECORD_BYTES + 1) as usize)
        );
        let (records, problems) = collect(Format::Json, &big);
        assert_eq!(records.len(), 1);
        assert_eq!(problems[0].row, Location::Item(1));
        assert!(problems[0].reason.contains("larger than"), "{problems:?}");
    }

    #[test]
    fn json_with_a_bom_reads_and_duplicate_keys_are_refused() {
        let (records, problems) = collect(Format::Json, "\u{feff}[{\"agreement_id\": \"A1\"}]");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(records[0].get(Field::AgreementId), Some("A1"));
        let (records, problems) = collect(
            Format::Json,
            r#"[{"agreement_id": "A1"}, {"agreement_id": "A2", "terms": {"principal": "1", "principal": "1000"}}]"#,
        );
        assert_eq!(records.len(), 1);
        assert_eq!(problems[0].row, Location::Item(1));
        assert!(
            problems[0].reason.contains("\"principal\" appears twice"),
            "{problems:?}"
        );
    }

    #[test]
    fn json_that_is_not_an_array_or_is_broken_is_a_file_problem() {
        let (_, problems) = collect(Format::Json, r#"{"agreements": []}"#);
        assert_eq!(problems[0].row, Location::File);
        assert!(problems[0].reason.contains("JSON array"), "{problems:?}");
        let (records, problems) = collect(Format::Json, r#"[{"agreement_id": "A1"}, {"x": ]"#);
        assert_eq!(records.len(), 1);
        assert_eq!(problems[0].row, Location::Item(1));
        assert!(problems[0].reason.contains("not valid JSON"));
    }

    fn import_seeds(ext: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seeds = Vec::new();
        for name in ["agreements", "bad-agreements"] {
            seeds.push(std::fs::read(dir.join(format!("config/samples/{name}.{ext}"))).unwrap());
        }
        for entry in std::fs::read_dir(dir.join("tests/corpus/import")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == ext) {
                seeds.push(std::fs::read(path).unwrap());
            }
        }
        seeds
    }

    /// The streaming readers never panic on any bytes, and every record or problem they
    /// report is located in the file.
    fn check_reader(
        format: Format,
        bytes: &[u8],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut records = Vec::new();
        let problems = match format {
            Format::Csv => read_csv(bytes, &mut |r| {
                records.push(r.location);
                ControlFlow::Continue(())
            }),
            Format::Json => read_json(bytes, &mut |r| {
                records.push(r.location);
                ControlFlow::Continue(())
            }),
        }
        .expect("in-memory reads cannot fail");
        for location in &records {
            proptest::prop_assert!(*location != Location::Line(0));
        }
        for p in &problems {
            proptest::prop_assert!(p.to_string().len() < 2_000, "{p}");
        }
        Ok(())
    }

    #[test]
    fn fuzz_csv_import_reader() {
        crate::fuzzing::run(
            "import csv",
            crate::fuzzing::mutated(import_seeds("csv")),
            |bytes| check_reader(Format::Csv, &bytes),
        );
    }

    #[test]
    fn fuzz_json_import_reader() {
        crate::fuzzing::run(
            "import json",
            crate::fuzzing::mutated(import_seeds("json")),
            |bytes| check_reader(Format::Json, &bytes),
        );
    }
}
