# SPDX-License-Identifier: BSD-3-Clause
# bench/restarts: turns each scenario's request log and restart times into docs/RESTARTS.md's
# tables and the plot's data.
#   report.py RESULTS_DIR PLOT_DATA COMMIT AFDT_EXTRA
import glob
import os
import sys

KINDS = ['refused', 'reset', 'eof', 'timeout', 'non2xx', 'error']
WINDOW_TAIL_US = 250000  # a restart's window: from its command until 250 ms after it finished
NAMES = {'afdt': 'afdt serve', 'naive': 'stop and start', 'reload': 'nginx -s reload',
         'upgrade': 'binary upgrade (USR2, QUIT)', 'sf': 'haproxy -x -sf',
         'mw': 'master-worker USR2', 'hup': 'HUP', 'usr2': 'USR2, then TERM old'}
SERVERS = ['lighttpd', 'nginx', 'haproxy', 'gunicorn', 'uvicorn', 'node', 'rollback']
METHODS = ['afdt', 'reload', 'upgrade', 'sf', 'mw', 'hup', 'usr2', 'naive']


def pct(xs, p):
    if not xs:
        return float('nan')
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def ms(us):
    return '-' if us != us else '%.1f' % (us / 1000.0)


def median(xs):
    return pct(xs, 50) if xs else float('nan')


def load(base):
    restarts = []
    for line in open(base + '.restarts'):
        f = line.split()
        kv = dict(x.split('=') for x in f[2:])
        restarts.append((int(f[0]), int(f[1]), float(kv['cmd_ms']), float(kv['accept_ms']),
                         int(kv['status'])))
    reqs = [l.split() for l in open(base + '.load')]
    return restarts, [(int(a), int(b), c, int(d)) for a, b, c, d in reqs]


def summarize(base):
    restarts, reqs = load(base)
    wins = [(t0, t1 + WINDOW_TAIL_US) for t0, t1, _, _, _ in restarts]
    lat, win, steady, fails, retried = [], [], [], dict.fromkeys(KINDS, 0), 0
    for start, l, outcome, r in reqs:
        retried += r
        if outcome != 'ok':
            fails[outcome] += 1
            continue
        lat.append(l)
        (win if any(a <= start <= b for a, b in wins) else steady).append(l)
    done = [x for x in restarts if x[4] == 0 and x[3] >= 0]
    return {
        'restarts': len(restarts), 'done': len(done), 'requests': len(reqs), 'fails': fails,
        'failed': sum(fails.values()), 'retried': retried,
        'p50': pct(lat, 50), 'p99': pct(lat, 99), 'max': max(lat) if lat else float('nan'),
        'wp50': pct(win, 50), 'wp99': pct(win, 99), 'wmax': max(win) if win else float('nan'),
        'sp99': pct(steady, 99),
        'cmd': median([x[2] for x in restarts]), 'accept': median([x[3] for x in done]),
    }


def main():
    res, plot, commit, extra = sys.argv[1:5]
    rows = {}
    for path in glob.glob(os.path.join(res, '*.load')):
        s, m, mode = os.path.basename(path)[:-5].split('.')
        rows[(s, m, mode)] = summarize(path[:-5])
    key = lambda k: (SERVERS.index(k[0]), METHODS.index(k[1]))
    print('Run at commit %s%s: %s restarts per scenario; 4 clients, paced.\n' %
          (commit, (' with afdt serve ' + extra) if extra else '',
           max((r['restarts'] for r in rows.values()), default=0)))
    with open(plot, 'w') as out:
        for mode in ['close', 'keepalive']:
            keys = sorted((k for k in rows if k[2] == mode), key=key)
            if not keys:
                continue
            print('### %s\n' % ('One connection per request' if mode == 'close'
                                else 'Keep-alive (a reused connection closed before any '
                                'response byte is retried once, as clients do)'))
            print('| server | restart by | restarts done | requests | failed | ' +
                  ' | '.join(KINDS[:-1]) + ' | other | retried | p50 ms | p99 ms | max ms | '
                  'window p50 | window p99 | window max | steady p99 | window/steady p99 | '
                  'restart: command ms | restart: new process accepting ms |')
            print('|' + '---|' * 21)
            for k in keys:
                r = rows[k]
                print('| %s | %s | %d/%d | %d | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s '
                      '| %.2f | %s | %s |' % (
                          k[0], NAMES[k[1]], r['done'], r['restarts'], r['requests'],
                          r['failed'], ' | '.join(str(r['fails'][x]) for x in KINDS),
                          r['retried'], ms(r['p50']), ms(r['p99']), ms(r['max']),
                          ms(r['wp50']), ms(r['wp99']), ms(r['wmax']), ms(r['sp99']),
                          r['wp99'] / r['sp99'] if r['sp99'] else float('nan'),
                          '%.0f' % r['cmd'], '%.0f' % r['accept']))
                if mode == 'close' and k[0] != 'rollback':
                    out.write('"%s %s" %.1f %.1f %d\n' % (
                        k[0], k[1], r['cmd'] if k[1] == 'afdt' else r['accept'],
                        r['accept'], r['failed']))
            print()
    print('Restart speed, afdt against each server\'s fastest loss-free own reload (medians, '
          'one connection per request):\n')
    for s in SERVERS:
        a = rows.get((s, 'afdt', 'close'))
        natives = [(rows[k]['accept'], NAMES[k[1]]) for k in rows
                   if k[0] == s and k[2] == 'close' and k[1] not in ('afdt', 'naive')
                   and rows[k]['failed'] == 0 and rows[k]['accept'] == rows[k]['accept']]
        if a and natives:
            best = min(natives)
            print('- %s: afdt restart %.0f ms, %s %.0f ms: %.1fx' %
                  (s, a['cmd'], best[1], best[0], a['cmd'] / best[0]))
    print()


main()
