//! An emulator of the Kubernetes API server, scheduler and controllers for the Tidepool lab.
