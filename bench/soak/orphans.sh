#!/bin/sh
# Orphan storm: each time the file $1 appears, remove it and make $2
# orphans: half stay in this unit's process group, half call setsid (out
# of the group: only flowinit, as PID 1 / subreaper, can reap them). All of
# them exit within a second, except $3 long-lived setsid ones (sleep 3600)
# that only the shutdown sweep removes.
trigger=$1 n=${2:-200} long=${3:-2}
while :; do
    if [ -e "$trigger" ]; then
        rm -f "$trigger"
        i=0
        while [ $i -lt "$n" ]; do
            if [ $((i % 2)) -eq 0 ]; then
                (sleep 0.$((i % 10)) &)
            else
                (setsid sleep 0.$((i % 10)) &)
            fi
            i=$((i + 1))
        done
        i=0
        while [ $i -lt "$long" ]; do
            (setsid sleep 3600 &)
            i=$((i + 1))
        done
        wait
        echo "storm of $n orphans done"
    fi
    sleep 0.2
done
