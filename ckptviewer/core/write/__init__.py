"""Writing files: verified, atomic exports (torch zip, legacy, safetensors, shards) and their destination rules."""
