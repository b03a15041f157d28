//! Local work times to UTC instants (placeholder until filled).
pub fn parse_local_time(s: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(s, "%H:%M").map_err(|e| e.to_string())
}
