# SPDX-License-Identifier: BSD-3-Clause
# bench/restarts: docs/restarts.png from report.py's data (dir = that file).
set terminal pngcairo size 1100,700 font ",9"
set multiplot layout 2,1
set style data histograms
set style fill solid 0.8
set boxwidth 0.8
set xtics rotate by -40 scale 0
set grid ytics
set key off
set logscale y
set ylabel "median restart, ms (log)"
set title "Restart time: afdt restart's return, or a new process seen accepting (natives, naive)"
plot dir using 2:xtic(1) lc rgb "#3070b0"
unset logscale y
set ylabel "failed requests"
set title "Failed requests over the restarts (one connection per request)"
set yrange [0:*]
plot dir using 4:xtic(1) lc rgb "#c04030"
unset multiplot
