//! esub
