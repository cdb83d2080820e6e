"""CPU seconds of a command and of each process it starts, by name (W&B's `wandb-core` and `wandb-symon` included),
from /proc, polled every 0.1 s: what the W&B service takes from the two training threads.

    python bench/process_cpu.py python scripts/train.py --dataset fashion-mnist --epochs 1 --log-interval 1
"""
import json
import os
import subprocess
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")
def stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError: return None
    name = s[s.index("(")+1:s.rindex(")")]; f = s[s.rindex(")")+2:].split()
    return name, int(f[1]), (int(f[11])+int(f[12]))/TCK  # name, ppid, utime+stime
t=time.time()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
seen = {}
while p.poll() is None:
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = stat(int(d))
            if s: procs[int(d)] = s
    fam = {p.pid}; changed=True
    while changed:
        changed=False
        for pid,(n,pp,c) in procs.items():
            if pp in fam and pid not in fam: fam.add(pid); changed=True
    for pid in fam:
        if pid in procs: seen[pid]=(procs[pid][0], procs[pid][2])
    time.sleep(0.1)
agg={}
for pid,(n,c) in seen.items(): agg[n]=agg.get(n,0)+c
print(json.dumps({"wall": round(time.time()-t,2), **{k: round(v,2) for k,v in agg.items()}}), flush=True)
