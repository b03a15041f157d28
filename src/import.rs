//! Reading agreement files (CSV, JSON): validated as a whole before anything is written.
