#!/usr/bin/env bash
# Cluster-mode keygate against single-node keygate, from two runs of the shared bench
# harness of one sitting (scripts/bench.sh CLUSTER=1 calls it):
#
#   scripts/bench-cluster-compare.sh SINGLE_RUN_DIR CLUSTER_RUN_DIR
#
# Each dir is a harness scratch folder (BENCH_RUN) with results.tsv; the cluster one also
# has redis/ from scripts/bench-cluster-keygate.sh. Printed, for the keygate rows of each
# run: median and best-of of req/s, p50, p99 and CPU per request (keygate's process only),
# then cluster/single two ways:
#   direct     cluster's figure over single's (medians; best-of for min_us/req and best_rps)
#   vs nginx   the median of cluster's per-round keygate/nginx-gw ratios over single's, so
#              a drift of the box between the two runs cancels out
# and Redis's own CPU per timed request (the whole run's Redis CPU, idle polls and
# warm-up included, over the timed wrk + h2load requests to keygate).
set -euo pipefail
S=$1 C=$2
for d in "$S" "$C"; do [[ -s $d/results.tsv ]] || { echo "$0: no $d/results.tsv" >&2; exit 1; }; done
for _ in $(seq 1 40); do [[ -s $C/redis/redis-cpu.txt ]] && break; sleep 0.25; done

stat() {  # stat DIR TARGET COL median|min|max
  awk -F'\t' -v t="$2" -v c="$3" 'NR>1 && $2==t && $c!="-" {print $c}' "$1/results.tsv" | sort -g |
    awk -v s="$4" '{a[NR]=$1} END{ if (!NR) {print "-"; exit}
      v = (s=="max") ? a[NR] : (s=="min") ? a[1] : (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; print v }'; }
vsngx() {  # median of per-round keygate/nginx-gw of column COL
  awk -F'\t' -v c="$2" 'NR>1 && $2=="nginx-gw"{b[$1]=$c} NR>1 && $2=="keygate"{v[$1]=$c}
    END{ for (r in v) if (b[r] > 0) printf "%.4f\n", v[r]/b[r] }' "$1/results.tsv" | sort -g |
    awk '{a[NR]=$1} END{ if (!NR) {print "-"; exit} print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="-" || b=="-" || b==0) print "-"; else printf "%.3f\n", a/b }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="-" || b=="-") print "-"; else printf "%+.2f\n", a-b }'; }

echo
echo "== cluster mode vs single node (keygate rows; single: $S, cluster: $C)"
F='%-9s %8s %8s %7s %7s %10s %10s %5s %5s %8s\n'
printf "$F" keygate rps best_rps p50_ms p99_ms cpu_us/req min_us/req "cpu%" "wait%" ngx_rps
for n in single cluster; do
  d=$S; [[ $n == cluster ]] && d=$C
  printf "$F" $n "$(stat "$d" keygate 3 median)" "$(stat "$d" keygate 3 max)" "$(stat "$d" keygate 4 median)" \
    "$(stat "$d" keygate 5 median)" "$(stat "$d" keygate 6 median)" "$(stat "$d" keygate 6 min)" \
    "$(stat "$d" keygate 8 median)" "$(stat "$d" keygate 9 median)" "$(stat "$d" nginx-gw 3 median)"
done
echo
echo "cluster/single   CPU/req: $(div "$(stat "$C" keygate 6 median)" "$(stat "$S" keygate 6 median)") median," \
  "$(div "$(stat "$C" keygate 6 min)" "$(stat "$S" keygate 6 min)") best-of," \
  "$(div "$(vsngx "$C" 6)" "$(vsngx "$S" 6)") vs nginx-gw"
echo "cluster/single   req/s:   $(div "$(stat "$C" keygate 3 median)" "$(stat "$S" keygate 3 median)") median," \
  "$(div "$(stat "$C" keygate 3 max)" "$(stat "$S" keygate 3 max)") best-of," \
  "$(div "$(vsngx "$C" 3)" "$(vsngx "$S" 3)") vs nginx-gw"
echo "cluster - single p99:     $(sub "$(stat "$C" keygate 5 median)" "$(stat "$S" keygate 5 median)") ms median," \
  "$(sub "$(stat "$C" keygate 5 min)" "$(stat "$S" keygate 5 min)") ms best-of;" \
  "p99 ratio vs nginx-gw $(div "$(vsngx "$C" 5)" "$(vsngx "$S" 5)")"
if [[ -s $C/redis/redis-cpu.txt && -s $C/redis/commandstats.txt ]]; then
  calls=$(awk -F'[=,]' '/^cmdstat_evalsha:/{print $2}' "$C/redis/commandstats.txt")
  cpu=$(awk '{print $3}' "$C/redis/redis-cpu.txt")
  reqs=$(cat "$C"/wrk-keygate-r*.txt 2>/dev/null | awk '/requests in/{n+=$1} END{print n+0}' || true)
  h2=$(cat "$C"/h2load-keygate-r*.txt 2>/dev/null | awk '/^requests:/{n+=$4} END{print n+0}' || true)
  echo "redis (cpu$(cat "$C/redis/cpu" 2>/dev/null || echo 0), not in keygate's CPU): ${cpu}s CPU over the run, ${calls:-0} EVALSHA" \
    "(rate limit + shared-log chunks), timed wrk+h2load requests to keygate $((reqs + h2))" \
    "= $(awk -v c="$cpu" -v n="$((reqs + h2))" 'BEGIN{ if (n>0) printf "%.1f", c*1e6/n; else print "-" }') us Redis CPU per timed request" \
    "(an overestimate: warm-up, correctness checks and idle polls are in the CPU, not in the count)"
else
  echo "redis: no redis/redis-cpu.txt or redis/commandstats.txt in $C (Redis CPU not reported)"
fi
