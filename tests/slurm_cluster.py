"""A real single-node Slurm cluster on localhost, for the tests (and by hand).

    python tests/slurm_cluster.py start DIR     # then: export SLURM_CONF=DIR/slurm.conf
    python tests/slurm_cluster.py stop DIR

Munge, MariaDB, slurmdbd, slurmctld and slurmd from Debian's packages (`.ci/run` installs them),
started by hand as root (no init system), each writing its pid and log under DIR. The recipe is
../shared/notes/slurm-single-node.md: slurmdbd with MariaDB because submitit follows its jobs with
`sacct`, which needs accounting. One node, `localhost`, with this machine's CPUs; partition
`debug`. task/affinity binds each job step to the CPUs it was given, so two one-CPU runs of an
array share the machine as the local backend's pinned workers do.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

CLUSTER = "scalinglab"
DB_PASSWORD = "scaling-lab-ci"
DAEMONS = ("slurmd", "slurmctld", "slurmdbd")
PROGRAMS = ("sbatch", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sacctmgr")


def missing_programs() -> list[str]:
  return [p for p in PROGRAMS if shutil.which(p) is None and
          not os.path.exists(os.path.join("/usr/sbin", p))]


def _conf(folder: str) -> str:
  cpus = os.cpu_count()
  mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
  return f"""ClusterName={CLUSTER}
SlurmctldHost=localhost(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
KillWait=30
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmdSpoolDir={folder}/slurmd
StateSaveLocation={folder}/state
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _dbd_conf(folder: str) -> str:
  return f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile={folder}/slurmdbd.pid
LogFile={folder}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass={DB_PASSWORD}
StoragePort=3306
"""


def wait_for(check, what: str, timeout: float = 60.0, describe=lambda: "") -> None:
  """Polls check() until it holds; an AssertionError naming `what` (and describe()'s account of
  the cluster) after `timeout` seconds."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if check():
      return
    time.sleep(0.2)
  raise AssertionError(f"the Slurm test cluster: {what} not reached in {timeout:.0f} s. "
                       f"{describe()}")


def _ok(*cmd, env=None) -> bool:
  return subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode == 0


def start(folder: str) -> dict:
  """Starts the cluster; returns the environment for clients (SLURM_CONF set).

  The accounting database starts empty: job ids restart at 1 with a new state folder, and an old
  cluster's records of the same ids would answer `sacct` for the new jobs."""
  folder = os.path.abspath(folder)
  os.makedirs(os.path.join(folder, "slurmd"), exist_ok=True)
  os.makedirs(os.path.join(folder, "state"), exist_ok=True)
  with open(os.path.join(folder, "slurm.conf"), "w") as f:
    f.write(_conf(folder))
  dbd = os.path.join(folder, "slurmdbd.conf")
  with open(dbd, "w") as f:
    f.write(_dbd_conf(folder))
  os.chmod(dbd, 0o600)
  env = dict(os.environ, SLURM_CONF=os.path.join(folder, "slurm.conf"))
  subprocess.run(["mkdir", "-p", "/run/munge", "/run/mysqld"], check=True)
  subprocess.run(["chown", "munge:munge", "/run/munge"], check=True)
  subprocess.run(["chown", "mysql:mysql", "/run/mysqld"], check=True)
  if not _ok("munge", "-n"):
    subprocess.run(["runuser", "-u", "munge", "--", "munged",
                    "--pid-file=/run/munge/munged.pid"], check=True)
  socket = "/run/mysqld/mysqld.sock"
  if not _ok("mysqladmin", f"--socket={socket}", "ping"):
    with open(os.path.join(folder, "mariadb.log"), "ab") as log:
      subprocess.Popen(["mariadbd", "--user=mysql", "--datadir=/var/lib/mysql",
                        f"--socket={socket}", "--bind-address=127.0.0.1"],
                       stdout=log, stderr=log, start_new_session=True)
    wait_for(lambda: _ok("mysqladmin", f"--socket={socket}", "ping"), "MariaDB")
  subprocess.run(["mysql", f"--socket={socket}", "-e",
                  f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'; "
                  "DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db; "
                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"],
                 check=True)
  subprocess.run(["slurmdbd"], env=env, check=True)
  wait_for(lambda: _ok("sacctmgr", "-n", "list", "cluster", env=env), "slurmdbd")
  subprocess.run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  subprocess.run(["slurmctld"], env=env, check=True)
  subprocess.run(["slurmd", "-N", "localhost"], env=env, check=True)
  wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env,
                                          capture_output=True, text=True).stdout, "slurmd")
  return env


def stop(folder: str) -> None:
  """Cancels every job, then stops the Slurm daemons of `folder` and MariaDB (munged stays: it is
  harmless)."""
  folder = os.path.abspath(folder)
  env = dict(os.environ, SLURM_CONF=os.path.join(folder, "slurm.conf"))
  subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  time.sleep(2)  # let slurmd end the job steps before it goes
  for name in DAEMONS:
    try:
      with open(os.path.join(folder, f"{name}.pid")) as f:
        os.kill(int(f.read().strip()), signal.SIGTERM)
    except (FileNotFoundError, ValueError, ProcessLookupError):
      pass
  time.sleep(1)
  subprocess.run(["mysqladmin", "--socket=/run/mysqld/mysqld.sock", "shutdown"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
    print(__doc__.split("\n\n")[0])
    sys.exit(2)
  if sys.argv[1] == "start":
    start(sys.argv[2])
    print(f"export SLURM_CONF={os.path.abspath(sys.argv[2])}/slurm.conf")
  else:
    stop(sys.argv[2])
