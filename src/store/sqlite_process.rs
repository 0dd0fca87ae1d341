//! SQLite's process-wide settings. SQLite takes them only before it starts (the first
//! connection starts it), so the binaries call [`configure_sqlite_process`] first in `main`.
//!
//! Why they matter: the driver copies every value of every row it reads, on the
//! connection's worker thread, and the task that decodes the row frees them on another.
//! - With SQLite's memory statistics on, each of those allocations took one process-wide
//!   mutex (a listing of 50 rows spent a quarter of its CPU waiting on it).
//! - With SQLite's default allocator (glibc's malloc), allocating on one thread and freeing
//!   on another was a sixth of an uncached listing's CPU; SQLite now allocates from mimalloc,
//!   the binaries' own allocator, which frees across threads without a lock.

use std::ffi::{c_int, c_void};

use libmimalloc_sys as mi;
use libsqlite3_sys as ffi;

unsafe extern "C" fn malloc(size: c_int) -> *mut c_void {
    // SAFETY: mi_malloc takes any size; SQLite never asks for a negative one.
    unsafe { mi::mi_malloc(size.max(0) as usize) }
}

unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `malloc` or `realloc` gave it.
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn realloc(p: *mut c_void, size: c_int) -> *mut c_void {
    // SAFETY: as `free`; the size is one `roundup` returned.
    unsafe { mi::mi_realloc(p, size.max(0) as usize) }
}

unsafe extern "C" fn size(p: *mut c_void) -> c_int {
    // SAFETY: as `free`. At least the size asked for, as SQLite requires; SQLite never asks
    // for 2 GiB or more, so the size fits.
    let usable = unsafe { mi::mi_usable_size(p) };
    c_int::try_from(usable).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn roundup(size: c_int) -> c_int {
    // SAFETY: a pure function of its argument.
    let good = unsafe { mi::mi_good_size(size.max(0) as usize) };
    c_int::try_from(good).unwrap_or(size)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// SQLite's process-wide settings (see the module comment): no memory statistics, and
/// mimalloc as its allocator. Called before any connection opens; returns whether SQLite
/// took both (a started SQLite refuses them and keeps its defaults).
pub fn configure_sqlite_process() -> bool {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: called before SQLite is initialized (if it was, SQLite only answers MISUSE);
    // MEMSTATUS takes one int; MALLOC takes a pointer to the methods, which SQLite copies.
    unsafe {
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) == ffi::SQLITE_OK
            && ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            ) == ffi::SQLITE_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use sea_orm::ConnectionTrait;

    /// The child half of the next test: runs alone in a fresh process (SQLite not started).
    #[tokio::test]
    #[ignore = "run by sqlite_is_configured_before_it_starts, in its own process"]
    async fn sqlite_process_child() {
        assert!(
            configure_sqlite_process(),
            "a fresh SQLite takes the settings"
        );
        let store = Store::connect("sqlite::memory:", 2).await.unwrap();
        store
            .db
            .execute_unprepared(
                "CREATE TABLE t (v TEXT); INSERT INTO t VALUES (hex(randomblob(5000)))",
            )
            .await
            .unwrap();
        let row = store
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                store.backend(),
                "SELECT length(v) AS n FROM t",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 10_000);
        let (mut used, mut peak) = (0i64, 0i64);
        // SAFETY: two out-pointers to live i64s.
        let rc = unsafe {
            ffi::sqlite3_status64(ffi::SQLITE_STATUS_MEMORY_USED, &mut used, &mut peak, 0)
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        assert_eq!((used, peak), (0, 0), "SQLite kept memory statistics");
        // SAFETY: sqlite3_malloc and sqlite3_free of one block; mimalloc only asked about it.
        unsafe {
            let p = ffi::sqlite3_malloc(1000);
            assert!(!p.is_null());
            assert!(
                mi::mi_is_in_heap_region(p),
                "SQLite allocates from mimalloc"
            );
            assert!(ffi::sqlite3_msize(p) >= 1000);
            ffi::sqlite3_free(p);
        }
        assert!(!configure_sqlite_process(), "a started SQLite refuses them");
    }

    #[test]
    fn sqlite_is_configured_before_it_starts() {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::sqlite_process::tests::sqlite_process_child",
                "--ignored",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert!(out.contains("1 passed"), "{out}");
    }
}
