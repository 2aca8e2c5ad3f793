//! Resident memory of the server and of the bench, read from `/proc` (Linux only), and the
//! open-file limit that ten thousand sockets need.

use std::io;

/// Resident memory of process `pid` (or of the bench itself), in KiB.
pub fn rss_kib(pid: Option<u32>) -> io::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The bench's own peak resident memory, in KiB.
pub fn own_peak_rss_kib() -> io::Result<u64> {
    status_kib(None, "VmHWM")
}

fn status_kib(pid: Option<u32>, field: &str) -> io::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(&path)?;
    status_field_kib(&status, field).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no {field} in {path} (a kernel thread, or not Linux?)"),
        )
    })
}

/// The value of a `Name:   1234 kB` line of `/proc/PID/status`.
fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name != field {
            return None;
        }
        let mut words = value.split_whitespace();
        let number = words.next()?.parse().ok()?;
        (words.next()? == "kB").then_some(number)
    })
}

/// Raises the soft limit on open files to the hard limit, and returns the limit in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\twaymark\nVmPeak:\t  912344 kB\nVmHWM:\t   61234 kB\n\
                          VmRSS:\t   51200 kB\nThreads:\t3\n";

    #[test]
    fn status_fields_are_read_in_kib() {
        assert_eq!(status_field_kib(STATUS, "VmRSS"), Some(51_200));
        assert_eq!(status_field_kib(STATUS, "VmHWM"), Some(61_234));
        assert_eq!(status_field_kib(STATUS, "VmSwap"), None);
        assert_eq!(status_field_kib(STATUS, "Threads"), None, "not a size");
        assert_eq!(status_field_kib("VmRSSx:\t1 kB\n", "VmRSS"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_bench_reads_its_own_memory_and_may_open_files() {
        let rss = rss_kib(None).unwrap();
        assert!(rss > 0);
        assert!(own_peak_rss_kib().unwrap() >= rss / 2);
        assert!(rss_kib(Some(std::process::id())).unwrap() > 0);
        assert!(raise_open_file_limit().unwrap() >= 256);
    }
}
