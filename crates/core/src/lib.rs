//! Tidepool's pure domain model: pools, sizes, worker lifecycle, conventions, safety rules and configuration. No I/O.
