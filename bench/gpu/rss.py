"""Host memory of a command: its VmRSS sampled every 20 ms; prints the peak and the median of
the samples in the second half of its run (the model loaded and generating: what a loaded model
holds on the host). Usage: python3 rss.py CMD ARGS..."""
import subprocess, sys, time

p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
samples = []
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("VmRSS:"):
                samples.append(int(line.split()[1]) / 1024)
    except OSError:
        pass
    time.sleep(0.02)
late = sorted(samples[len(samples) // 2:]) or [0]
print(f"rss_peak_mb={max(samples or [0]):.0f} rss_steady_mb={late[len(late) // 2]:.0f} rc={p.returncode}")
