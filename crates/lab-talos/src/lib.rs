//! An emulator of the Talos machine API (gRPC) for the Tidepool lab.
