#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Compiling the numbering plan takes seconds under the sanitizer: before the clock starts.
    init: sip_fuzz::trunking_checks::init(),
    |data: &[u8]| sip_fuzz::trunking_checks::numbering(data)
);
