//! `empty-sys-exit SECONDS`: attaches one empty BPF program (`r0 = 0; exit`) to the
//! `raw_syscalls:sys_exit` tracepoint, prints `empty-sys-exit: attached`, and holds it for
//! SECONDS. `cargo xtask bench syscalls` times a bare getpid loop meanwhile: the cost that
//! any program on that tracepoint puts on every syscall of the host, i.e. the floor under
//! agentd's own `tp_btf/sys_exit` program. Needs root (CAP_BPF + CAP_PERFMON).

use std::io::Write;
use std::time::Duration;

/// `struct bpf_insn` (linux/bpf.h): opcode, dst:4|src:4, offset, immediate.
#[repr(C)]
struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr` this needs (the kernel zero-extends a
/// shorter attr, and checks that bytes past what it knows are zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

/// The `BPF_RAW_TRACEPOINT_OPEN` part of `union bpf_attr`.
#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

pub fn run(args: &[String]) -> i32 {
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K, r0 = 0
        BpfInsn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: 0,
        },
        // BPF_JMP | BPF_EXIT
        BpfInsn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: bpf(2) reads `size_of::<ProgLoadAttr>()` bytes of `load`, whose pointers
    // (instructions, licence) outlive the call.
    let prog_fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const ProgLoadAttr,
            size_of::<ProgLoadAttr>() as u32,
        )
    };
    if prog_fd < 0 {
        println!(
            "empty-sys-exit: BPF_PROG_LOAD: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    let name = c"sys_exit";
    let open = RawTracepointAttr {
        name: name.as_ptr() as u64,
        prog_fd: prog_fd as u32,
        _pad: 0,
    };
    // SAFETY: as above; the returned fd holds the attachment until this process exits.
    let link_fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            &open as *const RawTracepointAttr,
            size_of::<RawTracepointAttr>() as u32,
        )
    };
    if link_fd < 0 {
        println!(
            "empty-sys-exit: BPF_RAW_TRACEPOINT_OPEN sys_exit: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    println!("empty-sys-exit: attached");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(seconds));
    0
}
