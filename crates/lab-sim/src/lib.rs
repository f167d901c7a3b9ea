//! Shared machinery of the lab emulators: the scalable clock, deterministic fault injection and test certificates.
