//! Ctrl-C (SIGINT) and SIGTERM for client commands that must leave cleanly: the first one
//! asks the command's loop to stop (it then leaves its group and hands back what it holds),
//! a second one ends the process at once.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received, 0 while none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only touches an atomic (or exits).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn requested() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// After the command cleaned up: ends the process by the signal it got, as if it had not been
/// caught (the shell and parent see "killed by SIGINT"); returns when none arrived.
pub fn finish() {
    let signal = RECEIVED.load(Ordering::SeqCst);
    if signal == 0 {
        return;
    }
    // SAFETY: restoring the default action and raising the signal on this process.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
        libc::_exit(128 + signal);
    }
}
