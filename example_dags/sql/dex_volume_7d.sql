-- Daily DEX volume of the last seven days, by project. Kept in git; dune_as_code.py syncs it to a saved query.
SELECT
    block_date,
    project,
    SUM(amount_usd) AS volume_usd
FROM dex.trades
WHERE block_date >= CURRENT_DATE - INTERVAL '7' DAY
GROUP BY 1, 2
ORDER BY 1, 3 DESC
