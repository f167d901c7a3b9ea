//! An emulator of the Proxmox VE REST API for the Tidepool lab.
