# SPDX-License-Identifier: BSD-3-Clause
# Plot throughput and latency against concurrency (floor (b), sync, async); called by bench/run.sh
# with datfile and outfile set.
set terminal pngcairo size 1200,500 font "sans,10"
set output outfile
set multiplot layout 1,2 title "libafdt: one connection per transfer, against the hand-written floor (b)"
set logscale x 2
set xtics 4
set xlabel "concurrent clients"
set grid
set key top left
set style line 1 lc rgb "#444444" lw 2 pt 7
set style line 2 lc rgb "#1f77b4" lw 2 pt 5
set style line 3 lc rgb "#d62728" lw 2 pt 9
set title "Throughput (higher is better)"
set ylabel "transfers per second"
set yrange [0:*]
plot datfile using 1:2 with linespoints ls 1 title "floor (b)", \
     datfile using 1:3 with linespoints ls 2 title "sync", \
     datfile using 1:4 with linespoints ls 3 title "async"
set title "Latency (lower is better): p50 solid, p99 dashed"
set ylabel "microseconds"
set logscale y 10
set yrange [*:*]
plot datfile using 1:5 with linespoints ls 1 title "floor (b) p50", \
     datfile using 1:6 with linespoints ls 2 title "sync p50", \
     datfile using 1:7 with linespoints ls 3 title "async p50", \
     datfile using 1:8 with linespoints ls 1 dt 2 title "floor (b) p99", \
     datfile using 1:9 with linespoints ls 2 dt 2 title "sync p99", \
     datfile using 1:10 with linespoints ls 3 dt 2 title "async p99"
unset multiplot
