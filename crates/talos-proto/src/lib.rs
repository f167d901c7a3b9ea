//! Tidepool's wire-compatible subset of the Talos machine API protobufs (client and server).
