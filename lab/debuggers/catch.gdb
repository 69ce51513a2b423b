# lab catch.gdb: let the attached process run until a trap or the lab's SIGINT stops it, then
# record it (`gdb --batch --nx -p PID -x catch.gdb -x detach.gdb`). gdb skips the rest of a
# file after a failed command, so the one that may fail (disassemble: no symbol) comes last.
set pagination off
set confirm off
set width 0
set trace-commands on
echo # lab-step: setup\n
# The SIGSTOP of an attach to a process that had stopped itself: not a stop.
handle SIGSTOP nostop noprint nopass
# A breakpoint instruction (int3, brk #0x1) stops here instead of killing the process.
handle SIGTRAP stop print nopass
# The lab's SIGCONT that ends the self-stop's group-stop passes through silently.
handle SIGCONT nostop noprint pass
# The lab interrupts a proven deadlock with SIGINT; it stops and is never delivered.
handle SIGINT stop print nopass
echo # lab-step: continue\n
continue
echo # lab-step: version\n
show version
echo # lab-step: threads\n
info threads
echo # lab-step: backtrace\n
thread apply all bt
echo # lab-step: frame\n
frame
echo # lab-step: registers\n
info registers general system
echo # lab-step: instruction\n
x/2i $pc
echo # lab-step: disassemble\n
disassemble
