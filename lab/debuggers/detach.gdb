# lab detach.gdb: leave the process untraced (a separate file: it runs even when the previous
# file stopped at a failed command).
echo # lab-step: detach\n
detach
echo # lab-step: done\n
